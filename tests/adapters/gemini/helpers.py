"""Builders shared by the Gemini adapter tests (targets, requests, raw upstream answers)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.types import (
    ChatRequest,
    ProviderSpec,
    RawResponse,
    Target,
    UpstreamRequest,
    dumps,
    loads,
)

API_KEY = "AIza-test-secret"
MODEL = "gemini-2.5-flash"
BASE = "https://generativelanguage.googleapis.com/v1beta/models"


def target(model: str = MODEL, *, drop_unsupported: bool = False, base_url: str = "",
           defaults: Mapping[str, Any] | None = None, **provider: Any) -> Target:
    spec = ProviderSpec(name="google", adapter="gemini", base_url=base_url, api_key=API_KEY,
                        **provider)
    return Target(provider=spec, model=model, drop_unsupported=drop_unsupported,
                  defaults=dict(defaults or {}))


def chat(body: dict[str, Any], model: str = "google/gemini") -> ChatRequest:
    return ChatRequest(body={"model": model, **body}, model=model, stream=bool(body.get("stream")))


def raw(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> RawResponse:
    data = body if isinstance(body, bytes) else dumps(body)
    return RawResponse(status=status, headers=dict(headers or {}), body=data)


def upstream_body(up: UpstreamRequest) -> Any:
    assert up.body is not None
    return loads(up.body)
