"""The native Gemini adapter (generativelanguage v1beta `generateContent` and embeddings).

`ADAPTER` implements `adapters.base.Adapter`; see SUPPORT.md in this package for which OpenAI
parameters are translated, ignored or rejected, and `wire.py` for how tool-call ids carry
Gemini's thought signatures across turns.
"""
from __future__ import annotations

from adapters.gemini import errors, request, response
from adapters.gemini.stream import GeminiStreamDecoder
from gateway.errors import UpstreamError
from gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    RawResponse,
    Target,
    UpstreamRequest,
)


class GeminiAdapter:
    name = "gemini"

    def build_request(self, req: ChatRequest, target: Target) -> UpstreamRequest:
        return request.build_chat_request(req, target)

    def parse_response(self, raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse:
        return response.parse_chat_response(raw, req, target)

    def stream_decoder(self, req: ChatRequest, target: Target) -> GeminiStreamDecoder:
        return GeminiStreamDecoder.for_request(req, target)

    def parse_error(self, raw: RawResponse, target: Target) -> UpstreamError:
        return errors.parse_error(raw, target)

    def build_embeddings_request(self, req: EmbeddingsRequest, target: Target) -> UpstreamRequest:
        return request.build_embeddings_request(req, target)

    def parse_embeddings_response(
        self, raw: RawResponse, req: EmbeddingsRequest, target: Target
    ) -> EmbeddingsResponse:
        return response.parse_embeddings_response(raw, req, target)


ADAPTER = GeminiAdapter()

__all__ = ["ADAPTER", "GeminiAdapter", "GeminiStreamDecoder"]
