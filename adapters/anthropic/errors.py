"""Anthropic error bodies and in-stream `error` events -> the gateway's UpstreamError tree."""
from __future__ import annotations

from typing import Any, Mapping

from adapters.anthropic.wire import ERROR_STATUS, provider_label
from gateway.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamQuotaExceeded,
    error_for_status,
    parse_retry_after,
)
from gateway.types import RawResponse, Target

_SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached"})


def parse_error(raw: RawResponse, target: Target) -> UpstreamError:
    """A non-2xx Anthropic answer, e.g. 529 `{"type":"error","error":{"type":"overloaded_error",
    "message":"Overloaded"},"request_id":"req_…"}`. Cloudflare's 413 may not be JSON at all."""
    data = raw.json()
    err: Mapping[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
    etype = str(err.get("type") or _fallback_type(raw.status))
    message = str(err.get("message") or _body_excerpt(raw.body) or "no error message")
    headers = {str(k).lower(): str(v) for k, v in raw.headers.items()}
    request_id = (data.get("request_id") if isinstance(data, dict) else None) or headers.get(
        "request-id")
    if request_id:
        message = f"{message} (request_id {request_id})"
    return error_from(target, raw.status, etype, message, retry_after_s=parse_retry_after(headers),
                      details=err.get("details"))


def stream_error(data: Mapping[str, Any], target: Target) -> UpstreamError:
    """An `event: error` after the 200 (e.g. overloaded_error mid-stream), mapped by its type."""
    raw = data.get("error")
    err: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    etype = str(err.get("type") or "api_error")
    status = ERROR_STATUS.get(etype, 500)
    message = f"{err.get('message') or 'no error message'} (in-stream error event)"
    return error_from(target, status, etype, message, details=err.get("details"))


def error_from(
    target: Target,
    status: int,
    etype: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    details: Any = None,
) -> UpstreamError:
    name = target.provider.name
    text = f"{provider_label(target)} answered {status} {etype}: {message}"
    code = details.get("error_code") if isinstance(details, dict) else None
    if status == 402 or etype == "billing_error" or code in _SPEND_LIMIT_CODES:
        # the account's credit or spend limit: not retryable here, another provider may answer
        return UpstreamQuotaExceeded(text, provider=name, upstream_status=status,
                                     retry_after_s=retry_after_s)
    if status == 413:
        return UpstreamBadRequest(text, provider=name, upstream_status=status,
                                  code="request_too_large")
    return error_for_status(name, status, text, retry_after_s=retry_after_s, code=etype)


def _fallback_type(status: int) -> str:
    for etype, s in ERROR_STATUS.items():
        if s == status:
            return etype
    return "api_error" if status >= 500 else "invalid_request_error"


def _body_excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit * 4].decode("utf-8", "replace").strip()
    return " ".join(text.split())[:limit]
