"""The adapter contract: translation between OpenAI Chat Completions and one provider wire format.

An adapter never opens sockets, reads clocks or touches Redis: it turns a canonical request into
an `UpstreamRequest` and upstream bytes back into canonical responses, so it is tested with plain
data. Streams are decoded by a per-request `StreamDecoder` that owns that stream's state.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol

from gateway.errors import UnsupportedParameter, UpstreamError
from gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    RawResponse,
    ServerSentEvent,
    StreamEvent,
    Target,
    UpstreamRequest,
)


class StreamDecoder(Protocol):
    """One per streamed request. `feed` gets each upstream SSE event, in order."""

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        """Translate one event; raise `UpstreamError` for an upstream error event."""

    def close(self) -> list[StreamEvent]:
        """The upstream stream ended: flush, or raise `UpstreamProtocolError` if it was cut short."""


class Adapter(Protocol):
    name: str

    def build_request(self, req: ChatRequest, target: Target) -> UpstreamRequest: ...

    def parse_response(self, raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse: ...

    def stream_decoder(self, req: ChatRequest, target: Target) -> StreamDecoder: ...

    def parse_error(self, raw: RawResponse, target: Target) -> UpstreamError: ...

    def build_embeddings_request(self, req: EmbeddingsRequest, target: Target) -> UpstreamRequest: ...

    def parse_embeddings_response(
        self, raw: RawResponse, req: EmbeddingsRequest, target: Target
    ) -> EmbeddingsResponse: ...


# Request fields that exist only between the client and the gateway; never sent upstream.
GATEWAY_ONLY_FIELDS = frozenset({"observability"})


def apply_param_policy(
    body: dict[str, Any], target: Target, unsupported: Iterable[str], *, label: str = ""
) -> dict[str, Any]:
    """Reject (400 naming provider and parameter) or drop fields `target` cannot take.

    Returns `body` itself when nothing is dropped (no copy on the hot path), else a shallow copy.
    """
    present = [p for p in unsupported if body.get(p) is not None]
    if not present:
        return body
    provider = label or target.provider.name
    if not target.drop_unsupported:
        raise UnsupportedParameter(
            f"provider '{provider}' does not support parameter '{present[0]}' "
            f"(set drop_unsupported: true on the route to drop it)",
            param=present[0],
        )
    return {k: v for k, v in body.items() if k not in present}


def with_defaults(body: dict[str, Any], target: Target) -> dict[str, Any]:
    """Fill route defaults (e.g. max_tokens) the client did not set; no copy when none apply."""
    missing = {k: v for k, v in target.defaults.items() if body.get(k) is None}
    if not missing:
        return body
    if "max_tokens" in missing and body.get("max_completion_tokens") is not None:
        del missing["max_tokens"]
        if not missing:
            return body
    return {**body, **missing}
