"""`Limiter`: the checks it builds per principal and route are remembered, never stale.

A principal or route is immutable, so its checks are built once; a new principal object (a
dynamic key's record changed), a new route (a reload) or a new `teams` mapping (a reload) gets
fresh checks, and the rate-limit headers follow at once.
"""
from __future__ import annotations

import pytest

from gateway.auth import Principal
from gateway.config.schema import Limits, Quota, TeamConfig
from gateway.errors import QuotaExceeded, RateLimited
from gateway.limiting import NO_LIMITS, Limiter
from gateway.limits.memory import MemoryBackend
from gateway.routing import Route


def route(rid: str = "r/1", rpm: int | None = None) -> Route:
    return Route(id=rid, targets=(), limits=Limits(rpm=rpm) if rpm else None)


async def test_headers_name_the_scope_with_the_least_left() -> None:
    lim = Limiter(MemoryBackend(), {"t": TeamConfig(limits=Limits(rpm=5, tpm=1000))})
    p = Principal(key_id="k", team="t", limits=Limits(rpm=10, tpm=50_000))
    res = await lim.acquire(p, route(), 100)
    assert res.headers == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s"}
    res = await lim.acquire(p, route(rpm=2), 100)  # the route's own limit is tighter
    assert res.headers["x-ratelimit-limit-requests"] == "2"
    assert res.headers["x-ratelimit-remaining-requests"] == "1"


async def test_a_key_without_limits_costs_nothing() -> None:
    lim = Limiter(MemoryBackend(), {})
    assert await lim.acquire(Principal(key_id="free"), route(), 10) is NO_LIMITS


async def test_new_team_limits_after_a_reload_apply_at_once() -> None:
    lim = Limiter(MemoryBackend(), {"t": TeamConfig(limits=Limits(rpm=100))})
    p = Principal(key_id="k", team="t")
    r = route()
    assert (await lim.acquire(p, r, 1)).headers["x-ratelimit-limit-requests"] == "100"
    lim.teams = {"t": TeamConfig(limits=Limits(rpm=3))}  # what a reload does
    res = await lim.acquire(p, r, 1)
    assert res.headers["x-ratelimit-limit-requests"] == "3"
    assert res.headers["x-ratelimit-remaining-requests"] == "2"
    await lim.acquire(p, r, 1)
    await lim.acquire(p, r, 1)
    with pytest.raises(RateLimited):
        await lim.acquire(p, r, 1)
    lim.teams = {}
    assert await lim.acquire(p, r, 1) is NO_LIMITS


async def test_a_changed_principal_gets_its_new_limits_and_quota() -> None:
    lim = Limiter(MemoryBackend(), {})
    before = Principal(key_id="dyn", limits=Limits(rpm=50))
    assert (await lim.acquire(before, route(), 1)).headers["x-ratelimit-limit-requests"] == "50"
    after = Principal(key_id="dyn", limits=Limits(rpm=20), quota=Quota(tokens=1, period="total"))
    res = await lim.acquire(after, route(), 1)
    assert res.headers["x-ratelimit-limit-requests"] == "20"
    lim.reconcile(res, 5, 0.0)  # the quota of the new principal is spent
    with pytest.raises(QuotaExceeded):
        await lim.acquire(after, route(), 1)
    again = Principal(key_id="dyn", limits=Limits(rpm=20))
    assert (await lim.acquire(again, route(), 1)).headers["x-ratelimit-limit-requests"] == "20"
    assert (await lim.acquire(before, route(), 1)).headers["x-ratelimit-limit-requests"] == "50"


async def test_a_rebuilt_route_gets_its_new_limit() -> None:
    lim = Limiter(MemoryBackend(), {})
    p = Principal(key_id="k")
    assert (await lim.acquire(p, route(rpm=9), 1)).headers["x-ratelimit-limit-requests"] == "9"
    assert (await lim.acquire(p, route(rpm=4), 1)).headers["x-ratelimit-limit-requests"] == "4"
    assert await lim.acquire(p, route(), 1) is NO_LIMITS


async def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.limiting as limiting

    monkeypatch.setattr(limiting, "_MEMO_MAX", 3)
    lim = Limiter(MemoryBackend(), {})
    for i in range(10):
        p = Principal(key_id=f"k{i}", limits=Limits(rpm=10 + i))
        res = await lim.acquire(p, route(f"r/{i}", rpm=100), 1)
        assert res.headers["x-ratelimit-limit-requests"] == str(10 + i)
        assert len(lim._principals) <= 3 and len(lim._routes) <= 3
