"""Azure OpenAI: the OpenAI-compatible adapter with Azure's URLs, auth header and error bodies.

PROVIDERS.md §4. Two URL schemes:
* classic (default): `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=V`
  where the target's `model` is the deployment name and V is `provider.api_version`
  (default `DEFAULT_API_VERSION`); embeddings likewise under `/embeddings`;
* v1 (`api_version: v1`, or provider option `api: v1`, or a base_url ending in `/openai/v1`):
  `{base_url}/openai/v1/chat/completions` with the deployment name as `model` in the body.
The key goes in the `api-key` header (`auth_header: authorization` sends `Bearer <token>` for
Entra ID tokens). Bodies are OpenAI's both ways: Azure's `finish_reason: content_filter` and
`content_filter_results` reach the client unchanged; the stream preamble with `choices: []` and
`prompt_filter_results` is skipped by the OpenAI stream decoder.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from adapters.openai import OpenAIAdapter, auth_headers, error_message, upstream_body
from gateway.errors import (
    UnsupportedParameter,
    UpstreamContentFiltered,
    UpstreamError,
    error_for_status,
    parse_retry_after,
)
from gateway.types import (
    JSON,
    ChatRequest,
    EmbeddingsRequest,
    RawResponse,
    Target,
    UpstreamRequest,
    dumps,
)

DEFAULT_API_VERSION = "2024-10-21"
WEB_SEARCH_TYPES = frozenset({"web_search", "web_search_preview"})


def is_v1(target: Target) -> bool:
    p = target.provider
    return (p.api_version == "v1" or p.options.get("api") == "v1"
            or p.base_url.rstrip("/").endswith("/openai/v1"))


def resource_url(target: Target) -> str:
    """The resource root (`https://NAME.openai.azure.com`), whatever suffix the config added."""
    base = target.provider.base_url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def endpoint(target: Target, operation: str) -> str:
    if is_v1(target):
        return f"{resource_url(target)}/openai/v1/{operation}"
    version = target.provider.api_version or DEFAULT_API_VERSION
    deployment = quote(target.model, safe="")
    return (f"{resource_url(target)}/openai/deployments/{deployment}/{operation}"
            f"?api-version={quote(version, safe='')}")


def label(target: Target) -> str:
    return f"azure (provider '{target.provider.name}')"


def without_web_search(body: JSON, target: Target) -> JSON:
    """Azure chat completions has no built-in web search: 400, or dropped with drop_unsupported."""
    tools = body.get("tools") or []
    search = [t for t in tools if isinstance(t, dict) and t.get("type") in WEB_SEARCH_TYPES]
    param = "tools" if search else ("web_search_options" if body.get("web_search_options")
                                    is not None else None)
    if param is None:
        return body
    if not target.drop_unsupported:
        raise UnsupportedParameter(
            f"provider '{target.provider.name} (azure)' has no built-in web search "
            f"('{param}'); set drop_unsupported: true on the route to drop it", param=param)
    out = {k: v for k, v in body.items() if k != "web_search_options"}
    kept = [t for t in tools if t not in search]
    if kept:
        out["tools"] = kept
    elif "tools" in out:
        del out["tools"]
        out.pop("tool_choice", None)
        out.pop("parallel_tool_calls", None)
    return out


class AzureOpenAIAdapter(OpenAIAdapter):
    name = "azure"

    def build_request(self, req: ChatRequest, target: Target) -> UpstreamRequest:
        body = upstream_body(req, target)
        body = without_web_search(body, target)
        return UpstreamRequest("POST", endpoint(target, "chat/completions"),
                               auth_headers(target, "api-key"), dumps(body), stream=req.stream)

    def build_embeddings_request(self, req: EmbeddingsRequest, target: Target) -> UpstreamRequest:
        body = {**req.body, "model": target.model}
        return UpstreamRequest("POST", endpoint(target, "embeddings"),
                               auth_headers(target, "api-key"), dumps(body))

    def parse_error(self, raw: RawResponse, target: Target) -> UpstreamError:
        msg, code, param = error_message(raw)
        status = raw.status if raw.status >= 400 else 502
        shown = f" {code}" if code and code != str(status) else ""
        message = f"{label(target)} answered {status}{shown}: {msg}"
        inner = _inner_error(raw)
        filtered = _filtered_categories(inner)
        if code == "content_filter" or inner.get("code") == "ResponsibleAIPolicyViolation":
            if filtered:
                message += f" (filtered: {', '.join(filtered)})"
            return UpstreamContentFiltered(message, provider=target.provider.name,
                                           upstream_status=status, param=param)
        return error_for_status(target.provider.name, status, message,
                                retry_after_s=parse_retry_after(_lower(raw.headers)),
                                code=None if code == str(status) else code, param=param)


def _inner_error(raw: RawResponse) -> JSON:
    data = raw.json()
    err = data.get("error") if isinstance(data, dict) else None
    inner = err.get("innererror") if isinstance(err, dict) else None
    return inner if isinstance(inner, dict) else {}


def _filtered_categories(inner: JSON) -> list[str]:
    results: Any = inner.get("content_filter_result") or {}
    if not isinstance(results, dict):
        return []
    out = []
    for name, result in results.items():
        if isinstance(result, dict) and result.get("filtered"):
            severity = result.get("severity")
            out.append(f"{name} ({severity})" if severity else name)
    return out


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


ADAPTER = AzureOpenAIAdapter()
