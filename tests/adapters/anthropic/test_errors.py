"""Anthropic error bodies -> the gateway's UpstreamError tree, with provider-naming messages."""
from __future__ import annotations

import pytest

from adapters.anthropic import ADAPTER
from gateway.errors import (
    ContextWindowExceeded,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotFound,
    UpstreamQuotaExceeded,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from tests.adapters.anthropic.helpers import SECRET, raw, target


def _body(etype: str, message: str = "msg") -> dict[str, object]:
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": "req_011CSURy8kJA4QAXZjsnBj5N"}


@pytest.mark.parametrize(("status", "etype", "cls", "retryable", "failover"), [
    (529, "overloaded_error", UpstreamUnavailable, True, True),
    (429, "rate_limit_error", UpstreamRateLimited, True, True),
    (400, "invalid_request_error", UpstreamBadRequest, False, False),
    (401, "authentication_error", UpstreamAuthError, False, True),
    (403, "permission_error", UpstreamAuthError, False, True),
    (404, "not_found_error", UpstreamNotFound, False, True),
    (500, "api_error", UpstreamUnavailable, True, True),
    (413, "request_too_large", UpstreamBadRequest, False, False),
    (402, "billing_error", UpstreamQuotaExceeded, False, True),
    (504, "timeout_error", UpstreamUnavailable, True, True),
])
def test_error_types(status: int, etype: str, cls: type[UpstreamError], retryable: bool,
                     failover: bool) -> None:
    err = ADAPTER.parse_error(raw(status, _body(etype, "Something")), target())
    assert type(err) is cls
    assert (err.retryable, err.failover, err.upstream_status, err.provider) == (
        retryable, failover, status, "claude-main")
    assert err.message.startswith(
        f"anthropic (provider 'claude-main') answered {status} {etype}: Something")
    assert "req_011CSURy8kJA4QAXZjsnBj5N" in err.message
    assert SECRET not in err.message


def test_overloaded_message_matches_the_documented_form() -> None:
    err = ADAPTER.parse_error(raw(529, _body("overloaded_error", "Overloaded")), target())
    assert err.message == ("anthropic (provider 'claude-main') answered 529 overloaded_error: "
                           "Overloaded (request_id req_011CSURy8kJA4QAXZjsnBj5N)")
    assert err.status == 502


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0), ({"Retry-After": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5),
    ({}, None),
])
def test_retry_after_is_honoured(headers: dict[str, str], seconds: float | None) -> None:
    err = ADAPTER.parse_error(raw(429, _body("rate_limit_error"), headers), target())
    assert err.retry_after_s == seconds


def test_prompt_too_long_is_a_context_window_error() -> None:
    body = _body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    assert isinstance(ADAPTER.parse_error(raw(400, body), target()), ContextWindowExceeded)


def test_spend_limit_429_is_quota_not_retried() -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "spend limit",
                                       "details": {"error_code": "enforced_spend_limit_reached"}}}
    err = ADAPTER.parse_error(raw(429, body), target())
    assert isinstance(err, UpstreamQuotaExceeded) and not err.retryable


def test_non_json_error_body_from_the_edge() -> None:
    err = ADAPTER.parse_error(raw(413, b"<html><body>413 Request Entity Too Large</body></html>",
                                  {"request-id": "req_edge"}), target())
    assert isinstance(err, UpstreamBadRequest) and err.code == "request_too_large"
    assert "answered 413 request_too_large: <html><body>413 Request Entity Too Large" in err.message
    assert "req_edge" in err.message


def test_unknown_5xx_without_body() -> None:
    err = ADAPTER.parse_error(raw(503, b""), target())
    assert isinstance(err, UpstreamUnavailable)
    assert "answered 503 api_error: no error message" in err.message
