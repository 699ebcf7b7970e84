"""The native Anthropic Messages adapter (`adapter: anthropic` in the config).

`ADAPTER` implements `adapters.base.Adapter`: pure translation between OpenAI Chat Completions
and https://api.anthropic.com/v1/messages, no I/O. See SUPPORT.md for the parameter table.
"""
from __future__ import annotations

from adapters.anthropic.errors import parse_error as _parse_error
from adapters.anthropic.request import build_request as _build_request
from adapters.anthropic.response import parse_response as _parse_response
from adapters.anthropic.stream import AnthropicStreamDecoder
from gateway.errors import InvalidRequest, UpstreamError
from gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    RawResponse,
    Target,
    UpstreamRequest,
)

__all__ = ["ADAPTER", "AnthropicAdapter", "AnthropicStreamDecoder"]


class AnthropicAdapter:
    name = "anthropic"

    def build_request(self, req: ChatRequest, target: Target) -> UpstreamRequest:
        return _build_request(req, target)

    def parse_response(self, raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse:
        return _parse_response(raw, req, target)

    def stream_decoder(self, req: ChatRequest, target: Target) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(req, target)

    def parse_error(self, raw: RawResponse, target: Target) -> UpstreamError:
        return _parse_error(raw, target)

    def build_embeddings_request(self, req: EmbeddingsRequest, target: Target) -> UpstreamRequest:
        raise _no_embeddings(target)

    def parse_embeddings_response(
        self, raw: RawResponse, req: EmbeddingsRequest, target: Target
    ) -> EmbeddingsResponse:
        raise _no_embeddings(target)

    def __repr__(self) -> str:
        return "AnthropicAdapter()"


def _no_embeddings(target: Target) -> InvalidRequest:
    return InvalidRequest(
        f"provider '{target.provider.name}' (anthropic) has no embeddings API; route embeddings "
        f"to an OpenAI, Azure or Gemini provider", param="model", code="unsupported_model")


ADAPTER = AnthropicAdapter()
