"""Google error bodies -> the gateway's UpstreamError tree (PROVIDERS.md §3.6, §7.3)."""
from __future__ import annotations

import pytest

from adapters.gemini import ADAPTER
from gateway import errors as E
from tests.adapters.gemini.helpers import API_KEY, raw, target


def google(code: int, status: str, message: str, details: list | None = None) -> dict:
    err = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return {"error": err}


@pytest.mark.parametrize("code,status,cls,client_status,retryable", [
    (429, "RESOURCE_EXHAUSTED", E.UpstreamRateLimited, 429, True),
    (400, "INVALID_ARGUMENT", E.UpstreamBadRequest, 400, False),
    (400, "FAILED_PRECONDITION", E.UpstreamBadRequest, 400, False),
    (403, "PERMISSION_DENIED", E.UpstreamAuthError, 502, False),
    (401, "UNAUTHENTICATED", E.UpstreamAuthError, 502, False),
    (404, "NOT_FOUND", E.UpstreamNotFound, 502, False),
    (503, "UNAVAILABLE", E.UpstreamUnavailable, 502, True),
    (500, "INTERNAL", E.UpstreamUnavailable, 502, True),
    (504, "DEADLINE_EXCEEDED", E.UpstreamUnavailable, 502, True),
])
def test_status_mapping(code: int, status: str, cls: type, client_status: int,
                        retryable: bool) -> None:
    err = ADAPTER.parse_error(raw(google(code, status, "boom"), status=code), target())
    assert type(err) is cls
    assert (err.status, err.retryable, err.upstream_status) == (client_status, retryable, code)
    assert err.provider == "google"
    assert err.message == f"gemini (provider 'google') answered {code} {status}: boom"


def test_retry_info_delay_is_honoured() -> None:
    body = google(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}])
    err = ADAPTER.parse_error(raw(body, status=429), target())
    assert isinstance(err, E.UpstreamRateLimited) and err.retry_after_s == 37.0


def test_retry_after_header_wins() -> None:
    body = google(429, "RESOURCE_EXHAUSTED", "slow down", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}])
    err = ADAPTER.parse_error(raw(body, status=429, headers={"Retry-After": "3"}), target())
    assert err.retry_after_s == 3.0


def test_invalid_api_key_is_the_gateways_credential_problem() -> None:
    body = google(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com"}])
    err = ADAPTER.parse_error(raw(body, status=400), target())
    assert isinstance(err, E.UpstreamAuthError) and not err.retryable
    assert err.status == 502 and API_KEY not in err.message


def test_context_too_long_is_recognised() -> None:
    body = google(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum "
                  "number of tokens allowed (1048576).")
    assert isinstance(ADAPTER.parse_error(raw(body, status=400), target()),
                      E.ContextWindowExceeded)


def test_non_json_and_list_bodies() -> None:
    err = ADAPTER.parse_error(raw(b"<html>Bad Gateway</html>", status=502), target())
    assert isinstance(err, E.UpstreamUnavailable)
    assert err.message == "gemini (provider 'google') answered 502: <html>Bad Gateway</html>"
    listed = ADAPTER.parse_error(raw([google(404, "NOT_FOUND", "no model")], status=404), target())
    assert isinstance(listed, E.UpstreamNotFound)


def test_status_from_body_when_http_status_is_not_an_error() -> None:
    err = ADAPTER.parse_error(raw({"error": {"message": "x", "status": "RESOURCE_EXHAUSTED"}},
                                  status=200), target())
    assert isinstance(err, E.UpstreamRateLimited) and err.upstream_status == 429
