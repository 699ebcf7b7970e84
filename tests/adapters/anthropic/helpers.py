"""Shared builders for the Anthropic adapter tests (plain data, no I/O)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.anthropic import ADAPTER
from gateway.types import JSON, ChatRequest, ProviderSpec, RawResponse, Target, dumps, loads

DATA = Path(__file__).parent / "data"
SECRET = "sk-ant-secret-never-logged"


def target(*, drop: bool = False, defaults: dict[str, Any] | None = None,
           base_url: str = "", options: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None, model: str = "claude-sonnet-4-5") -> Target:
    provider = ProviderSpec(name="claude-main", adapter="anthropic", base_url=base_url,
                            api_key=SECRET, headers=headers or {}, options=options or {})
    return Target(provider=provider, model=model, defaults=defaults or {}, drop_unsupported=drop)


def chat(body: JSON) -> ChatRequest:
    return ChatRequest(body=body, model="anthropic/claude-sonnet-4-5",
                       stream=bool(body.get("stream")))


def upstream_body(body: JSON, tgt: Target | None = None) -> JSON:
    req = ADAPTER.build_request(chat(body), tgt or target())
    assert req.body is not None
    return loads(req.body)  # type: ignore[no-any-return]


def raw(status: int, body: Any, headers: dict[str, str] | None = None) -> RawResponse:
    data = body if isinstance(body, bytes) else dumps(body)
    return RawResponse(status=status, headers=headers or {}, body=data)
