"""The built-in `mock` provider: the OpenAI wire format, answered in-process.

Requests go to `mock://<provider>/...`; the upstream transport answers them with the same
deterministic replies `modelyard mock-provider --flavor openai` serves, so a fresh checkout
works with no keys and no network. Options (provider `options:`): `latency_ms` before the first
byte, `chunk_delay_ms` between stream chunks, `chunk_words` per chunk, `fail_rate`.
"""
from __future__ import annotations

from adapters.openai import OpenAIAdapter
from gateway.types import Target


class MockAdapter(OpenAIAdapter):
    name = "mock"

    def url(self, target: Target, path: str) -> str:
        return f"mock://{target.provider.name}/{path}"


ADAPTER = MockAdapter()
