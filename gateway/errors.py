"""One error tree for the whole gateway.

Every error a client can see is a `GatewayError` with class attributes `status`, `type`, `code`
and `retryable`; one middleware turns them into OpenAI error JSON. Upstream failures are
`UpstreamError`s: the retry predicate reads `retryable` (try the same target again) and the
dispatcher reads `failover` (move on to the next target) — nothing else.
"""
from __future__ import annotations

import email.utils
import time
from typing import Any, Mapping

from gateway.types import JSON


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False
    failover: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_json(self) -> JSON:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# ---------------------------------------------------------------- the client's own mistakes


class InvalidRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class AuthenticationFailed(GatewayError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(GatewayError):
    status, type, code = 403, "invalid_request_error", "model_not_allowed"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class BodyTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class RateLimited(GatewayError):
    """A gateway limit (key, team, model, provider) refused the request."""

    status, type, code = 429, "rate_limit_exceeded", "rate_limit_exceeded"

    def __init__(self, message: str, *, scope: str, retry_after_s: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.scope = scope
        self.retry_after_s = retry_after_s
        self.headers.setdefault("Retry-After", str(max(1, int(retry_after_s + 0.999))))


class QuotaExceeded(GatewayError):
    status, type, code = 429, "insufficient_quota", "insufficient_quota"

    def __init__(self, message: str, *, scope: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.scope = scope


class ServiceUnavailable(GatewayError):
    status, type, code = 503, "server_error", "service_unavailable"


# ---------------------------------------------------------------- upstream failures


class UpstreamError(GatewayError):
    """An upstream attempt failed. `provider` is the config's provider name (never a secret)."""

    status, type, code = 502, "upstream_error", "upstream_error"
    retryable = True
    failover = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retry_after_s = retry_after_s

    @property
    def reason(self) -> str:
        """Bounded label for metrics: the upstream status code, `timeout` or `connect`."""
        return str(self.upstream_status) if self.upstream_status else "error"


class UpstreamTimeout(UpstreamError):
    status, type, code = 504, "timeout_error", "upstream_timeout"

    @property
    def reason(self) -> str:
        return "timeout"


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"

    @property
    def reason(self) -> str:
        return "connect"


class UpstreamUnavailable(UpstreamError):
    """5xx, 408, 409, 529 overloaded."""

    code = "upstream_unavailable"


class UpstreamRateLimited(UpstreamError):
    status, type, code = 429, "rate_limit_exceeded", "upstream_rate_limited"


class UpstreamAuthError(UpstreamError):
    """The provider rejected the gateway's own credentials: never the client's 401."""

    code = "upstream_auth_error"
    retryable = False


class UpstreamNotFound(UpstreamError):
    code = "upstream_model_not_found"
    retryable = False


class UpstreamBadRequest(UpstreamError):
    """The provider refused the request itself: the same request fails everywhere."""

    status, type, code = 400, "invalid_request_error", "upstream_bad_request"
    retryable = False
    failover = False


class ContextWindowExceeded(UpstreamBadRequest):
    code = "context_length_exceeded"


class UpstreamContentFiltered(UpstreamBadRequest):
    code = "content_filter"


class UpstreamProtocolError(UpstreamError):
    """Unparseable body, a stream cut short or stalled, an error event mid-stream."""

    code = "upstream_protocol_error"


class UpstreamQuotaExceeded(UpstreamError):
    """The provider account's own credit/quota is spent (e.g. OpenAI insufficient_quota)."""

    code = "upstream_quota_exceeded"
    retryable = False


class AllTargetsFailed(GatewayError):
    """Every target and fallback failed; `attempts` go to logs and traces, not the body."""

    status, type, code = 502, "upstream_error", "all_targets_failed"

    def __init__(self, message: str, *, last: UpstreamError | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.last = last


# ---------------------------------------------------------------- helpers for adapters


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, else `Retry-After` as seconds (maybe fractional) or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_CONTEXT_HINTS = ("context_length", "context length", "context window", "too long",
                  "maximum context", "prompt is too long", "exceeds the maximum")


def error_for_status(
    provider: str,
    status: int,
    message: str,
    *,
    retry_after_s: float | None = None,
    code: str | None = None,
    param: str | None = None,
) -> UpstreamError:
    """Classify an upstream HTTP failure. `message` should already say which provider answered."""
    kw: dict[str, Any] = {"provider": provider, "upstream_status": status,
                          "retry_after_s": retry_after_s, "param": param}
    cls: type[UpstreamError]
    if status == 429:
        cls = UpstreamQuotaExceeded if code == "insufficient_quota" else UpstreamRateLimited
    elif status in (401, 403):
        cls = UpstreamAuthError
    elif status == 404:
        cls = UpstreamNotFound
    elif status in (408, 409, 529) or status >= 500:
        cls = UpstreamUnavailable
    elif status in (400, 413, 422):
        low = f"{code or ''} {message}".lower()
        cls = ContextWindowExceeded if any(h in low for h in _CONTEXT_HINTS) else UpstreamBadRequest
        return cls(message, **kw)
    else:
        cls = UpstreamBadRequest
    return cls(message, **kw)
