"""Authentication: Bearer and x-api-key, 401/403, the master key, expiry, no secret leaks."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.auth import Authenticator, parse_expiry
from gateway.errors import AuthenticationFailed
from gateway.logs import JsonFormatter
from gateway.routing import RouteTable
from tests.core.support import (KEY_A, KEY_ALL, KEY_HASHED, KEY_OLD, MASTER, PROVIDER_KEY,
                                SECRETS, auth, base_config, build)
from tests.fakes import FakeOpenAI, Reply, error_body

HELLO = [{"role": "user", "content": "hello"}]


def chat(model: str = "openai/gpt-4o") -> dict[str, Any]:
    return {"model": model, "messages": HELLO}


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {KEY_ALL}"},
    {"authorization": f"bearer {KEY_ALL}"},
    {"Authorization": f"Bearer   {KEY_ALL}  "},
    {"x-api-key": KEY_ALL},
])
async def test_accepted_key_forms(fake: FakeOpenAI, gw: Any, headers: dict[str, str]) -> None:
    resp = await gw.post("/v1/chat/completions", headers=headers, json=chat())
    assert resp.status == 200
    assert len(fake.requests) == 1


@pytest.mark.parametrize("headers, code", [
    ({}, "invalid_api_key"),
    ({"Authorization": "Bearer sk-not-a-key"}, "invalid_api_key"),
    ({"Authorization": f"Basic {KEY_ALL}"}, "invalid_api_key"),
    ({"Authorization": "Bearer "}, "invalid_api_key"),
    ({"x-api-key": "sk-wrong"}, "invalid_api_key"),
    ({"Authorization": f"Bearer {KEY_OLD}"}, "expired_api_key"),
])
async def test_rejected_keys_are_401(fake: FakeOpenAI, gw: Any, headers: dict[str, str],
                                     code: str) -> None:
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        resp = await gw.post(path, headers=headers, json=chat())
        assert resp.status == 401
        body = await resp.json()
        assert body["error"]["code"] == code
        assert body["error"]["type"] == "invalid_request_error"
        assert resp.headers["x-request-id"]
    resp = await gw.get("/v1/models", headers=headers)
    assert resp.status == 401
    assert fake.requests == []


async def test_auth_comes_before_body_parsing(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", data=b"not json",
                         headers={"content-type": "application/json"})
    assert resp.status == 401


async def test_model_outside_the_key_globs_is_403(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_A), json=chat("other/model"))
    assert resp.status == 403
    err = (await resp.json())["error"]
    assert (err["code"], err["param"]) == ("model_not_allowed", "model")
    resp = await gw.post("/v1/embeddings", headers=auth(KEY_A),
                         json={"model": "other/model", "input": "x"})
    assert resp.status == 403
    assert fake.requests == []


async def test_master_key_may_use_everything(fake: FakeOpenAI, gw: Any) -> None:
    for model in ("openai/gpt-4o", "other/model", "fast", "openai/anything"):
        resp = await gw.post("/v1/chat/completions", headers=auth(MASTER), json=chat(model))
        assert resp.status == 200, model
    resp = await gw.post("/v1/chat/completions", headers=auth(MASTER), json=chat("mock/echo"))
    assert resp.status == 200
    assert [r.json["model"] for r in fake.requests] == [
        "gpt-4o-2024-08-06", "other-upstream", "gpt-4o-2024-08-06", "anything"]


async def test_key_given_by_its_digest(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_HASHED), json=chat("mock/echo"))
    assert resp.status == 200
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_HASHED), json=chat())
    assert resp.status == 403


async def test_expiry_is_checked_against_the_clock() -> None:
    cfg = build(base_config("http://127.0.0.1:9/v1"))
    now = [parse_expiry("2000-12-31T23:59:59Z")]
    authn = Authenticator(cfg.auth, clock=lambda: now[0])
    assert (await authn.authenticate(auth(KEY_OLD))).key_id == "old"
    now[0] = parse_expiry("2001-01-01T00:00:00Z")
    with pytest.raises(AuthenticationFailed) as info:
        await authn.authenticate(auth(KEY_OLD))
    assert info.value.code == "expired_api_key"
    assert parse_expiry("1700000000") == 1700000000.0 == parse_expiry(1700000000)
    assert parse_expiry("2023-11-14T22:13:20") == 1700000000.0  # naive means UTC


async def test_upstream_gets_the_provider_key_never_the_client_key(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat())
    assert resp.status == 200
    headers = fake.last.headers
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert headers["x-extra"] == "yes"  # the provider's extra headers
    assert headers["content-type"].startswith("application/json")
    assert KEY_ALL not in str(headers) and "x-api-key" not in headers


def test_config_and_route_reprs_hide_secrets() -> None:
    cfg = build(base_config("http://127.0.0.1:9/v1"))
    text = repr(cfg) + repr(RouteTable(cfg).providers) + repr(RouteTable(cfg).resolve("fast"))
    for secret in SECRETS:
        assert secret not in text


async def test_secrets_never_reach_error_bodies_or_logs(fake: FakeOpenAI, gw: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.setFormatter(JsonFormatter())
    bodies: list[str] = []

    async def call(key: str, model: str = "openai/gpt-4o", **kw: Any) -> int:
        resp = await gw.post("/v1/chat/completions", headers=auth(key), json=chat(model), **kw)
        bodies.append(await resp.text())
        return resp.status

    assert await call(KEY_ALL + "x") == 401
    assert await call(KEY_OLD) == 401
    assert await call(KEY_A, "other/model") == 403
    assert await call(KEY_A, "nope/nope") == 404
    fake.push(Reply(500, error_body("upstream exploded", "server_error")))
    assert await call(KEY_ALL) == 502
    assert await call(KEY_ALL) == 200
    assert await call(MASTER) == 200
    lines = caplog.text + "".join(JsonFormatter().format(r) for r in caplog.records)
    assert "upstream exploded" in "".join(bodies)  # the provider's message is passed on
    assert caplog.records, "the gateway logged nothing: the leak check would be vacuous"
    for secret in SECRETS:
        assert secret not in lines, secret
        assert secret not in "".join(bodies), secret


async def test_provider_key_echoed_by_the_upstream_is_not_passed_on(
        fake: FakeOpenAI, gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Some OpenAI-compatible upstreams quote the key they rejected in their 401 message."""
    caplog.set_level(logging.DEBUG)
    fake.push(Reply(401, error_body(f"Incorrect API key provided: {PROVIDER_KEY}.",
                                    code="invalid_api_key")))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat())
    assert resp.status == 502
    body = await resp.text()
    assert PROVIDER_KEY not in body
    assert PROVIDER_KEY not in "".join(JsonFormatter().format(r) for r in caplog.records)
