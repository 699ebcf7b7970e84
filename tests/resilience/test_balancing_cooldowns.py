"""Load balancing (weighted, least_inflight, latency) and cooldowns with a half-open probe."""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from prometheus_client import REGISTRY

from gateway.balancer import Balancer
from gateway.config.schema import Cooldown
from gateway.types import ProviderSpec, Target
from tests.resilience.conftest import chat, gateway_config, post, resources, route
from tests.resilience.fake_upstream import hang, status

ONE_TRY = {"attempts": 1, "backoff_s": 0.01, "backoff_max_s": 0.01}


def _target(name: str, weight: float = 1.0) -> Target:
    return Target(ProviderSpec(name=name, adapter="openai"), f"up-{name}", weight=weight)


def _shift_clock(client: Any) -> list[float]:
    """Let the test move the balancer's clock forward (no sleeping through cool-downs)."""
    offset = [0.0]
    resources(client).balancer.clock = lambda: time.monotonic() + offset[0]
    return offset


def test_weighted_random_follows_the_weights() -> None:
    bal = Balancer(Cooldown(), rng=random.Random(1234))
    a, b, c = _target("a", 3), _target("b", 1), _target("c", 0.5)
    firsts = {"a": 0, "b": 0, "c": 0}
    for _ in range(9000):
        order = bal.order([a, b, c], "weighted")
        assert sorted(t.provider.name for t in order) == ["a", "b", "c"]
        firsts[order[0].provider.name] += 1
    assert abs(firsts["a"] / 9000 - 3 / 4.5) < 0.02
    assert abs(firsts["b"] / 9000 - 1 / 4.5) < 0.02
    assert abs(firsts["c"] / 9000 - 0.5 / 4.5) < 0.02


async def test_weighted_split_through_the_gateway(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1:3", "p2:1")}))
    resources(client).balancer.rng.seed(99)
    for _ in range(400):
        assert (await post(client, chat())).status == 200
    assert fake.calls["p1"] + fake.calls["p2"] == 400
    assert 0.68 <= fake.calls["p1"] / 400 <= 0.82


async def test_least_inflight_spreads_concurrent_requests_evenly(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1:10", "p2:1",
                                                            strategy="least_inflight")}))
    fake.script("p1", *[hang(0.3)] * 10)
    fake.script("p2", *[hang(0.3)] * 10)
    results = await asyncio.gather(*(post(client, chat()) for _ in range(10)))
    assert all(r.status == 200 for r in results)
    assert (fake.calls["p1"], fake.calls["p2"]) == (5, 5)  # weights do not matter here


async def test_latency_strategy_prefers_the_fastest_and_punishes_failures(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1", "p2", strategy="latency")},
                                          retries=ONE_TRY))
    fake.script("p1", *[hang(0.15)] * 20)
    for _ in range(10):
        assert (await post(client, chat())).status == 200
    assert fake.calls["p1"] == 1  # measured once, then the faster p2 takes everything
    assert fake.calls["p2"] == 9
    fake.script("p2", status(500))  # one failure makes p2 look slower than p1
    r = await post(client, chat())
    assert r.status == 200 and r.headers["x-modelyard-provider"] == "p1"
    r = await post(client, chat())
    assert r.headers["x-modelyard-provider"] == "p1"


async def test_failures_trip_the_breaker_then_one_probe_before_trusting_again(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")}, retries=ONE_TRY,
                         cooldown={"failures": 2, "window_s": 60, "cooldown_s": 30})
    client = await gateway(cfg)
    offset = _shift_clock(client)
    fake.script("p1", status(500), status(500))
    for _ in range(2):
        r = await post(client, chat())
        assert r.status == 200 and r.headers["x-modelyard-provider"] == "p2"
    assert fake.calls["p1"] == 2
    for _ in range(5):  # in cool-down: p1 is not called at all
        r = await post(client, chat())
        assert r.headers["x-modelyard-provider"] == "p2"
    assert fake.calls["p1"] == 2
    offset[0] = 31.0  # the cool-down is over: half-open
    fake.script("p1", hang(0.3))  # the probe takes a while; others must not pile onto p1
    results = await asyncio.gather(*(post(client, chat()) for _ in range(6)))
    assert all(r.status == 200 for r in results)
    assert fake.calls["p1"] == 3  # exactly one probe
    assert sorted(r.headers["x-modelyard-provider"] for r in results) == ["p1"] + ["p2"] * 5
    for _ in range(3):  # trusted again
        assert (await post(client, chat())).headers["x-modelyard-provider"] == "p1"


async def test_a_failed_probe_reopens_the_breaker(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")}, retries=ONE_TRY,
                         cooldown={"failures": 1, "window_s": 60, "cooldown_s": 30})
    client = await gateway(cfg)
    offset = _shift_clock(client)
    fake.script("p1", status(500), status(502))
    await post(client, chat())
    offset[0] = 31.0
    r = await post(client, chat())  # the probe fails over to p2
    assert r.status == 200 and fake.calls["p1"] == 2
    for _ in range(3):
        await post(client, chat())
    assert fake.calls["p1"] == 2


async def test_a_429_takes_the_target_out_at_once(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")},
                         cooldown={"failures": 100, "window_s": 60, "cooldown_s": 30})
    client = await gateway(cfg)
    fake.script("p1", status(429))
    r = await post(client, chat())
    assert r.status == 200 and r.headers["x-modelyard-provider"] == "p2"
    for _ in range(4):
        await post(client, chat())
    assert fake.calls["p1"] == 1


async def test_a_429_cool_down_lasts_its_retry_after(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")},
                         cooldown={"failures": 100, "window_s": 60, "cooldown_s": 30})
    client = await gateway(cfg)
    offset = _shift_clock(client)
    fake.script("p1", status(429, headers={"Retry-After": "5"}))
    await post(client, chat())
    offset[0] = 6.0
    r = await post(client, chat())
    assert r.headers["x-modelyard-provider"] == "p1"


async def test_everything_cooling_fails_fast_with_retry_after(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1")}, retries=ONE_TRY,
                         cooldown={"failures": 1, "window_s": 60, "cooldown_s": 20})
    client = await gateway(cfg)
    fake.script("p1", status(500))
    assert (await post(client, chat())).status == 502
    r = await post(client, chat())
    assert r.status == 502
    assert "cooling down" in r.error["message"]
    assert 19 <= int(r.headers["Retry-After"]) <= 20
    assert fake.calls["p1"] == 1


async def test_provider_up_gauge_follows_the_breaker(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")}, retries=ONE_TRY,
                         cooldown={"failures": 1, "window_s": 60, "cooldown_s": 30})
    client = await gateway(cfg)
    offset = _shift_clock(client)

    async def gauge_becomes(value: float) -> None:
        for _ in range(60):  # the app's health loop refreshes it every second
            if REGISTRY.get_sample_value("modelyard_provider_up", {"provider": "p1"}) == value:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"provider_up never became {value}")

    await gauge_becomes(1.0)
    fake.script("p1", status(503))
    await post(client, chat())
    await gauge_becomes(0.0)
    assert REGISTRY.get_sample_value("modelyard_provider_up", {"provider": "p2"}) == 1.0
    offset[0] = 31.0
    await gauge_becomes(1.0)
