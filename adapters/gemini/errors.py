"""Google error bodies (`{"error": {"code", "message", "status", "details"}}`) -> UpstreamError.

PROVIDERS.md §3.6 / §6.7. The message always says which provider answered what, e.g.
"gemini (provider 'google') answered 429 RESOURCE_EXHAUSTED: You exceeded your current quota".
Retry hints: `retry-after-ms` / `Retry-After` headers, else google.rpc.RetryInfo.retryDelay.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters.gemini import wire
from gateway.errors import (
    UpstreamAuthError,
    UpstreamError,
    error_for_status,
    parse_retry_after,
)
from gateway.types import JSON, RawResponse, Target

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_MAX_BODY_ECHO = 300


def parse_error(raw: RawResponse, target: Target) -> UpstreamError:
    data = raw.json()
    if isinstance(data, list) and data:  # the JSON-array streaming form wraps the error too
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        text = raw.body[:_MAX_BODY_ECHO].decode("utf-8", errors="replace").strip()
        message = f"{wire.provider_label(target)} answered {raw.status}: {text or 'empty body'}"
        return error_for_status(target.provider.name, raw.status, message,
                                retry_after_s=parse_retry_after(lower(raw.headers)))
    return error_from_body(err, target, raw.status, raw.headers)


def error_from_body(err: JSON, target: Target, http_status: int | None,
                    headers: Mapping[str, str] | None = None) -> UpstreamError:
    """Also used for an `{"error": ...}` event inside a stream (HTTP status 200 there)."""
    status_name = str(err.get("status") or "")
    code = err.get("code")
    status = http_status if http_status and http_status >= 400 else None
    if status is None:
        status = code if isinstance(code, int) and code >= 400 else wire.STATUS_HTTP.get(status_name, 502)
    message = (f"{wire.provider_label(target)} answered {status}"
               f"{' ' + status_name if status_name else ''}: {err.get('message') or 'no message'}")
    raw_details = err.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    retry_after = parse_retry_after(lower(headers or {}))
    if retry_after is None:
        retry_after = retry_delay(details)
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
        # Google answers 400 for a bad key: the gateway's own credentials, never the client's 401.
        return UpstreamAuthError(message, provider=target.provider.name, upstream_status=status,
                                 code="upstream_auth_error")
    return error_for_status(target.provider.name, status, message, retry_after_s=retry_after)


def retry_delay(details: list[Any]) -> float | None:
    """google.rpc.RetryInfo {"retryDelay": "37s"} (a protobuf Duration in JSON form)."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay") or ""))
            if match:
                return float(match.group(1))
    return None


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    """parse_retry_after looks up lower-case names; aiohttp's CIMultiDict or a plain dict."""
    return {k.lower(): v for k, v in headers.items()}
