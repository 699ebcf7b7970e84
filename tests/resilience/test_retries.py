"""Retries: which failures are retried, backoff bounds, Retry-After, per-route/provider settings."""
from __future__ import annotations

import email.utils
import socket
import time

import pytest
from prometheus_client import REGISTRY

from tests.resilience.conftest import chat, gateway_config, post, resources, route
from tests.resilience.fake_upstream import hang, reset, status


def _retries(provider: str, reason: str) -> float:
    return REGISTRY.get_sample_value("modelyard_retries_total",
                                     {"provider": provider, "reason": reason}) or 0.0


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_retryable_statuses_are_retried_on_the_same_target(fake, gateway, code):
    client = await gateway(gateway_config(fake, {"m": route("p1")}))
    fake.script("p1", status(code), status(code))
    before = _retries("p1", str(code))
    r = await post(client, chat())
    assert r.status == 200, r.body
    assert r.body["choices"][0]["message"]["content"] == "hi"
    assert fake.calls["p1"] == 3
    assert r.headers["x-modelyard-provider"] == "p1"
    assert _retries("p1", str(code)) - before == 2
    assert r.elapsed < 1.0  # backoff_max_s is 0.05


async def test_resets_and_timeouts_before_the_first_byte_are_retried(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1")},
                         timeouts={"connect_s": 1, "first_token_s": 0.3, "total_s": 5})
    client = await gateway(cfg)
    fake.script("p1", reset(), hang(5))
    before = _retries("p1", "timeout")
    r = await post(client, chat())
    assert r.status == 200, r.body
    assert fake.calls["p1"] == 3
    assert _retries("p1", "timeout") - before == 1
    assert 0.3 <= r.elapsed < 1.5


async def test_connect_errors_are_retried_then_fall_over(fake, gateway):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    cfg = gateway_config(fake, {"m": route("dead", "p1:0.001")}, providers=("p1",))
    cfg["providers"]["dead"] = {"adapter": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                "api_key": "sk-x"}
    client = await gateway(cfg)
    resources(client).balancer.rng.seed(1)
    before = _retries("dead", "connect")
    r = await post(client, chat())
    assert r.status == 200
    assert r.headers["x-modelyard-provider"] == "p1"
    assert _retries("dead", "connect") - before == 2  # 3 attempts on the dead target, then p1
    assert fake.calls["p1"] == 1


@pytest.mark.parametrize("code", [400, 404, 413, 422])
async def test_other_4xx_are_never_retried(fake, gateway, code):
    client = await gateway(gateway_config(fake, {"m": route("p1")}))
    fake.script("p1", status(code, "you sent something odd"))
    r = await post(client, chat())
    assert fake.calls["p1"] == 1
    if code == 404:  # the upstream lost the model: try elsewhere, nothing else to try here
        assert r.status == 502
    else:
        assert r.status == 400
        assert "you sent something odd" in r.error["message"]
        assert r.error["type"] == "invalid_request_error"


async def test_400_is_returned_at_once_without_trying_other_targets(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1", "p2")}))
    fake.script("p1", status(400, "bad temperature"))
    fake.script("p2", status(400, "bad temperature"))
    r = await post(client, chat())
    assert r.status == 400
    assert "bad temperature" in r.error["message"]
    assert fake.calls["p1"] + fake.calls["p2"] == 1


@pytest.mark.parametrize("code", [401, 403])
async def test_upstream_auth_failure_moves_on_and_is_never_the_clients_401(fake, gateway, code):
    client = await gateway(gateway_config(fake, {"m": route("p1", "p2")}))
    fake.script("p1", status(code, "Incorrect API key provided: sk-up****p1"))
    fake.script("p2", status(code, "Incorrect API key provided: sk-up****p2"))
    r = await post(client, chat())
    assert r.status == 502
    assert fake.calls["p1"] == 1 and fake.calls["p2"] == 1  # not retried, but failed over
    msg = r.error["message"]
    assert "provider account" in msg and "credentials" in msg
    assert "sk-up" not in msg  # the provider's words about our key are not echoed
    assert r.error["code"] == "upstream_auth_error"


async def test_upstream_auth_failure_on_one_target_is_served_by_the_next(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1:1000", "p2:0.001")}))
    resources(client).balancer.rng.seed(3)
    fake.script("p1", status(401, "Incorrect API key provided"))
    r = await post(client, chat())
    assert r.status == 200
    assert r.headers["x-modelyard-provider"] == "p2"
    assert fake.calls["p1"] == 1 and fake.calls["p2"] == 1


@pytest.mark.parametrize("headers,low,high", [
    ({"Retry-After": "1"}, 0.95, 1.6),
    ({"retry-after-ms": "300"}, 0.28, 0.9),
    ({"Retry-After": "0.4"}, 0.38, 1.0),
])
async def test_retry_after_is_honoured(fake, gateway, headers, low, high):
    client = await gateway(gateway_config(fake, {"m": route("p1")}))
    fake.script("p1", status(503, headers=headers))
    r = await post(client, chat())
    assert r.status == 200
    assert fake.calls["p1"] == 2
    assert low <= r.elapsed < high


async def test_retry_after_as_an_http_date(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}))
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1-2 s
    fake.script("p1", status(429, headers={"Retry-After": when}))
    r = await post(client, chat())
    assert r.status == 200
    assert fake.calls["p1"] == 2
    assert 0.9 <= r.elapsed < 2.6


async def test_a_retry_after_beyond_the_deadline_moves_on_instead_of_sleeping(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")},
                         timeouts={"connect_s": 1, "first_token_s": 2, "total_s": 3})
    client = await gateway(cfg)
    resources(client).balancer.rng.seed(5)
    fake.script("p1", status(503, headers={"Retry-After": "30"}))
    r = await post(client, chat())
    assert r.status == 200
    assert r.headers["x-modelyard-provider"] == "p2"
    assert fake.calls["p1"] == 1 and fake.calls["p2"] == 1
    assert r.elapsed < 1.0


async def test_a_lone_rate_limited_target_with_a_long_retry_after_gives_429_at_once(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1")},
                         timeouts={"connect_s": 1, "first_token_s": 2, "total_s": 3})
    client = await gateway(cfg)
    fake.script("p1", status(429, headers={"Retry-After": "20"}))
    r = await post(client, chat())
    assert r.status == 429
    assert r.headers["Retry-After"] == "20"
    assert r.error["code"] == "upstream_rate_limited"
    assert fake.calls["p1"] == 1
    assert r.elapsed < 1.0


async def test_route_retries_override_provider_and_global(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1", retries={"attempts": 2, "backoff_s": 0.01}),
                                "n": route("p2")},
                         provider_extra={"p1": {"retries": {"attempts": 5}},
                                         "p2": {"retries": {"attempts": 4, "backoff_s": 0.01,
                                                            "backoff_max_s": 0.02}}},
                         retries={"attempts": 1})
    client = await gateway(cfg)
    fake.script("p1", *[status(500)] * 10)
    fake.script("p2", *[status(500)] * 10)
    r = await post(client, chat("m"))
    assert r.status == 502
    assert fake.calls["p1"] == 2  # the route's setting
    r = await post(client, chat("n"))
    assert r.status == 502
    assert fake.calls["p2"] == 4  # the provider's setting


async def test_per_provider_retries_apply_per_target_of_a_shared_route(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")},
                         provider_extra={"p1": {"retries": {"attempts": 1}},
                                         "p2": {"retries": {"attempts": 3, "backoff_s": 0.01}}},
                         retries={"attempts": 2})
    client = await gateway(cfg)
    resources(client).balancer.rng.seed(2)
    fake.script("p1", *[status(500)] * 10)
    fake.script("p2", *[status(500)] * 10)
    r = await post(client, chat())
    assert r.status == 502
    assert (fake.calls["p1"], fake.calls["p2"]) == (1, 3)


async def test_backoff_is_bounded_by_backoff_max(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1")},
                         retries={"attempts": 6, "backoff_s": 0.02, "backoff_max_s": 0.04})
    client = await gateway(cfg)
    fake.script("p1", *[status(500)] * 5)
    r = await post(client, chat())
    assert r.status == 200
    assert fake.calls["p1"] == 6
    assert r.elapsed < 0.6  # five full-jitter waits of at most 0.04 s, plus the calls


async def test_embeddings_are_retried_and_fall_over_the_same_way(fake, gateway):
    client = await gateway(gateway_config(fake, {"e": route("p1:1000", "p2:0.001")}))
    resources(client).balancer.rng.seed(8)
    fake.script("p1", status(502), status(401))
    r = await post(client, {"model": "e", "input": "hello"}, path="/v1/embeddings")
    assert r.status == 200, r.body
    assert r.body["data"][0]["embedding"] == [0.1, 0.2]
    assert r.headers["x-modelyard-provider"] == "p2"
    assert (fake.calls["p1"], fake.calls["p2"]) == (2, 1)
