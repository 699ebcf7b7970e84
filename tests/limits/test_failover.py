"""Redis killed, restarted and slowed down, with on_redis_error open and closed."""
from __future__ import annotations

import time
from typing import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.errors import ServiceUnavailable
from gateway.limits.failover import SLOW_LIMIT
from gateway.limits import create_state
from gateway.limits.failover import FailoverBackend
from gateway.limits.redis_backend import RedisBackend
from gateway.limits.spec import LimitCheck
from tests.redis_fixture import RedisServer

CHECKS = [LimitCheck("key", "k", 3, None)]


class Events(list[bool]):
    def __call__(self, up: bool) -> None:
        self.append(up)


@pytest.fixture
async def make(own_redis: RedisServer) -> AsyncIterator[object]:
    made: list[FailoverBackend] = []

    async def factory(mode: str, budget_s: float = 0.05) -> tuple[FailoverBackend, Events]:
        events = Events()
        b = FailoverBackend(RedisBackend.from_url(own_redis.url), on_redis_error=mode,
                            budget_s=budget_s, probe_interval_s=3600, on_state_change=events)
        await b.start()
        made.append(b)
        return b, events
    yield factory
    for b in made:
        await b.close()


async def test_open_mode_falls_back_and_recovers(make, own_redis: RedisServer) -> None:  # type: ignore[no-untyped-def]
    b, events = await make("open")
    d = await b.acquire(CHECKS, 0)
    assert d.ok and not d.degraded and b.up
    own_redis.stop()
    res = [await b.acquire(CHECKS, 0) for _ in range(4)]
    assert all(d.degraded for d in res) and not b.up and events == [False]
    assert [d.ok for d in res] == [True, True, True, False]  # per-replica counting
    assert b.down_since is not None
    assert not await b.probe()
    own_redis.start()
    assert await b.probe() and b.up and events == [False, True]
    assert b.last_outage is not None and b.last_outage[0] <= b.last_outage[1]
    back = await b.acquire(CHECKS, 0)  # fresh server: scripts reloaded (NOSCRIPT fallback)
    assert back.ok and not back.degraded
    assert back.requests is not None and back.requests.remaining == 2


async def test_closed_mode_refuses_with_503_and_recovers(make, own_redis: RedisServer) -> None:  # type: ignore[no-untyped-def]
    b, events = await make("closed")
    assert (await b.acquire(CHECKS, 0)).ok
    own_redis.stop()
    with pytest.raises(ServiceUnavailable) as exc:
        await b.acquire(CHECKS, 0)
    assert exc.value.status == 503 and events == [False]
    with pytest.raises(ServiceUnavailable):
        await b.acquire(CHECKS, 0)
    own_redis.start()
    assert await b.probe()
    d = await b.acquire(CHECKS, 0)
    assert d.ok and not d.degraded and events == [False, True]


async def test_reservation_settles_on_the_backend_that_made_it(make, own_redis: RedisServer) -> None:  # type: ignore[no-untyped-def]
    b, _ = await make("open")
    own_redis.stop()
    d = await b.acquire([LimitCheck("key", "k", None, 1000)], 900)
    assert d.degraded and d.reservation is not None and d.reservation.origin == "memory"
    await b.reconcile(d.reservation, 100)
    again = await b.acquire([LimitCheck("key", "k", None, 1000)], 900)
    assert again.ok and again.degraded


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_slow_redis_does_not_stall_past_budget(make, own_redis: RedisServer,  # type: ignore[no-untyped-def]
                                                      mode: str) -> None:
    b, events = await make(mode, 0.05)
    assert (await b.acquire(CHECKS, 0)).ok
    admin = Redis.from_url(own_redis.url)
    # every client's commands block for 600 ms (CLIENT UNPAUSE would block too)
    await admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
    try:
        for i in range(SLOW_LIMIT):  # one slow answer is not an outage; SLOW_LIMIT in a row are
            assert events == []
            started = time.monotonic()
            if mode == "open":
                d = await b.acquire(CHECKS, 0)
                assert d.ok and d.degraded
            else:
                with pytest.raises(ServiceUnavailable):
                    await b.acquire(CHECKS, 0)
            assert time.monotonic() - started < 0.15  # the budget, not the pause
        assert events == [False]
    finally:
        await admin.aclose()
    assert await b.probe() and events == [False, True]  # the probe waits out the pause
    assert not (await b.acquire(CHECKS, 0)).degraded


async def test_create_state_memory_and_redis(own_redis: RedisServer) -> None:
    mem = create_state("")
    await mem.start()
    assert mem.limits.name == "memory" and mem.redis_up
    await mem.close()
    events = Events()
    st = create_state(own_redis.url, on_redis_error="open", on_state_change=events)
    await st.start()
    try:
        assert st.limits.name == "failover" and st.redis_up
        rec, secret = await st.keys.create({"id": "x"})
        assert rec.id == "x" and secret.startswith("my-")
        own_redis.stop()
        assert (await st.limits.acquire(CHECKS, 0)).degraded and not st.redis_up
    finally:
        own_redis.start()
        await st.close()


async def test_start_with_redis_down_starts_degraded() -> None:
    from tests.redis_fixture import free_port
    events = Events()
    b = FailoverBackend(RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0"),
                        on_redis_error="open", probe_interval_s=3600, on_state_change=events)
    await b.start()
    try:
        assert not b.up and events == [False]
        assert (await b.acquire(CHECKS, 0)).degraded
    finally:
        await b.close()
