"""OpenAI-compatible upstreams (OpenAI, Lunaby, Lunos, OpenRouter, Groq, Mistral, vLLM, Ollama…).

One adapter driven by config: base URL, auth header, extra headers and the parameters a vendor
rejects (`unsupported_params`). The request body is the client's own, so fields the gateway does
not know reach the upstream unchanged; only `model` is replaced (and streams always ask for
usage, which the core strips again if the client did not ask).
"""
from __future__ import annotations

from typing import Any

from adapters.base import apply_param_policy, with_defaults
from gateway.errors import (
    UnsupportedParameter, UpstreamError, UpstreamProtocolError, error_for_status, parse_retry_after,
)
from gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    RawResponse,
    ServerSentEvent,
    StreamEvent,
    Target,
    Usage,
    UpstreamRequest,
    dumps,
    loads,
)

_JSON = "application/json"
_EMPTY: dict[str, Any] = {}


def auth_headers(target: Target, default_header: str = "authorization") -> dict[str, str]:
    p = target.provider
    headers = {"content-type": _JSON}
    if p.api_key:
        name = (p.auth_header or default_header).lower()
        headers[name] = f"Bearer {p.api_key}" if name == "authorization" else p.api_key
    if p.headers:
        headers.update(p.headers)
    return headers


def web_search_mode(target: Target) -> str:
    """How a vendor takes `tools: [{"type": "web_search"}]` (provider `options.web_search`):
    `options` (OpenAI: `web_search_options`), `passthrough` (vendors that take the tool as is,
    such as Lunos and OpenRouter) or `none` (a 400 naming the provider)."""
    mode = target.provider.options.get("web_search")
    if mode:
        return str(mode)
    return "options" if "api.openai.com" in (target.provider.base_url or "api.openai.com") \
        else "passthrough"


def _map_web_search(body: dict[str, Any], target: Target) -> dict[str, Any]:
    tools = body.get("tools")
    if not tools or not any(t.get("type") == "web_search" for t in tools):
        return body
    mode = web_search_mode(target)
    if mode == "passthrough":
        return body
    if mode == "none":
        if target.drop_unsupported:
            rest = [t for t in tools if t.get("type") != "web_search"]
            return {**{k: v for k, v in body.items() if k != "tools"}, **({"tools": rest} if rest else {})}
        raise UnsupportedParameter(
            f"provider '{target.provider.name}' has no built-in web search "
            f"(tools[].type 'web_search')", param="tools")
    rest = [t for t in tools if t.get("type") != "web_search"]
    out = {k: v for k, v in body.items() if k != "tools"}
    if rest:
        out["tools"] = rest
    out.setdefault("web_search_options", {})
    return out


def upstream_body(req: ChatRequest, target: Target) -> dict[str, Any]:
    """The client's body with the upstream model, route defaults and the vendor's policy applied."""
    body = apply_param_policy(req.body, target, target.provider.unsupported_params)
    body = with_defaults(body, target)
    body = {**body, "model": target.model}
    if "tools" in body:
        body = _map_web_search(body, target)
    if req.stream:
        opts = body.get("stream_options") or {}
        if not opts.get("include_usage"):
            body["stream_options"] = {**opts, "include_usage": True}
    return body


def error_message(raw: RawResponse) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an OpenAI-style, Mistral-style or plain error body."""
    data = raw.json()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or raw.body[:300].decode("utf-8", "replace")
            code = err.get("code")
            return (msg if isinstance(msg, str) else dumps(msg).decode(),
                    str(code) if code is not None else err.get("type"), err.get("param"))
        if isinstance(err, str):
            return err, None, None
    text = raw.body[:300].decode("utf-8", "replace").strip()
    return text or f"HTTP {raw.status}", None, None


class OpenAIStreamDecoder:
    """OpenAI-format SSE → canonical events. After the first chunk, an ordinary delta chunk (no
    usage, no error) is passed on as its own text with only the model field to replace: the
    passthrough costs no JSON parse and no re-encode per chunk."""

    __slots__ = ("target", "done", "finished", "fast")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.done = False
        self.finished = False
        self.fast = ""  # the exact `"model":"..."` text of this stream's chunks, once known

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        data = event.data
        fast = self.fast
        if fast and fast in data and '"usage"' not in data and '"error"' not in data \
                and '"finish_reason":null' in data:
            return [StreamEvent(_EMPTY, raw=data, raw_model=fast)]
        if data == "[DONE]":
            self.done = True
            return []
        if not data:
            return []
        try:
            obj = loads(data)
        except ValueError:
            raise UpstreamProtocolError(
                f"provider '{self.target.provider.name}' sent a stream event that is not JSON",
                provider=self.target.provider.name) from None
        if "error" in obj:
            raw = RawResponse(200, {}, data.encode())
            msg, code, _ = error_message(raw)
            raise UpstreamProtocolError(
                f"provider '{self.target.provider.name}' sent an error mid-stream: {msg}",
                provider=self.target.provider.name, code=code)
        choices = obj.get("choices")
        usage_raw = obj.get("usage") or (obj.get("x_groq") or {}).get("usage")
        usage = Usage.from_openai(usage_raw) if usage_raw else None
        if not choices:
            if usage is None:
                return []  # e.g. Azure's prompt_filter_results preamble
            return [StreamEvent(obj, usage=usage, usage_only=True)]
        if choices[0].get("finish_reason"):
            self.finished = True
        if not fast and isinstance(obj.get("model"), str):
            needle = '"model":' + dumps(obj["model"]).decode()
            if needle in data and data.count('"model"') == 1:
                self.fast = needle
        return [StreamEvent(obj, usage=usage)]

    def close(self) -> list[StreamEvent]:
        if not self.done:
            raise UpstreamProtocolError(
                f"provider '{self.target.provider.name}' ended the stream without [DONE]",
                provider=self.target.provider.name)
        return []


class OpenAIAdapter:
    name = "openai"
    default_base_url = "https://api.openai.com/v1"

    def url(self, target: Target, path: str) -> str:
        return f"{target.provider.base_url or self.default_base_url}/{path}"

    def build_request(self, req: ChatRequest, target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", self.url(target, "chat/completions"), auth_headers(target),
                               dumps(upstream_body(req, target)), stream=req.stream)

    def parse_response(self, raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse:
        body = raw.json()
        if not isinstance(body, dict) or "error" in body or "choices" not in body:
            if isinstance(body, dict) and "error" in body:  # OpenRouter: errors with HTTP 200
                raise self.parse_error(raw, target)
            raise UpstreamProtocolError(
                f"provider '{target.provider.name}' answered a body that is not a chat completion",
                provider=target.provider.name)
        return ChatResponse(body, Usage.from_openai(body.get("usage")))

    def stream_decoder(self, req: ChatRequest, target: Target) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(target)

    def parse_error(self, raw: RawResponse, target: Target) -> UpstreamError:
        msg, code, param = error_message(raw)
        status = raw.status if raw.status >= 400 else 502
        return error_for_status(
            target.provider.name, status,
            f"provider '{target.provider.name}' answered {status}"
            f"{f' {code}' if code else ''}: {msg}",
            retry_after_s=parse_retry_after(raw.headers), code=code, param=param)

    def build_embeddings_request(self, req: EmbeddingsRequest, target: Target) -> UpstreamRequest:
        body = {**req.body, "model": target.model}
        return UpstreamRequest("POST", self.url(target, "embeddings"), auth_headers(target),
                               dumps(body))

    def parse_embeddings_response(self, raw: RawResponse, req: EmbeddingsRequest,
                                  target: Target) -> EmbeddingsResponse:
        body = raw.json()
        if not isinstance(body, dict) or "data" not in body:
            raise UpstreamProtocolError(
                f"provider '{target.provider.name}' answered a body that is not an embeddings list",
                provider=target.provider.name)
        return EmbeddingsResponse(body, Usage.from_openai(body.get("usage")))


ADAPTER = OpenAIAdapter()
