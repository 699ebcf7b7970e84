from __future__ import annotations

from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.accounting.traces import MemoryTraceStore, RedisTraceStore, TraceStore

TRACE = {"request_id": "r1", "model": "openai/gpt-4o", "status": 200,
         "attempts": [{"provider": "openai", "model": "gpt-4o", "status": 200, "duration_ms": 12.0}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 2}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def traces(request: pytest.FixtureRequest) -> AsyncIterator[TraceStore]:
    store: TraceStore
    if request.param == "memory":
        store = MemoryTraceStore()
    else:
        store = RedisTraceStore(request.getfixturevalue("redis_url"))
    yield store
    await store.close()


async def test_trace_visible_only_to_its_key(traces: TraceStore) -> None:
    await traces.put("r1", "k-a", TRACE, ttl_s=60)
    assert await traces.get("r1", "k-a") == TRACE
    assert await traces.get("r1", "k-b") is None
    assert await traces.get("r2", "k-a") is None
    # another key may use the same request id without seeing or overwriting the first
    await traces.put("r1", "k-b", {**TRACE, "status": 502}, ttl_s=60)
    assert (await traces.get("r1", "k-a"))["status"] == 200  # type: ignore[index]
    assert (await traces.get("r1", "k-b"))["status"] == 502  # type: ignore[index]


async def test_memory_traces_expire_with_the_clock() -> None:
    clock = Clock()
    store = MemoryTraceStore(clock=clock)
    await store.put("r1", "k", TRACE, ttl_s=30)
    clock.now += 29.9
    assert await store.get("r1", "k") == TRACE
    clock.now += 0.1
    assert await store.get("r1", "k") is None
    await store.put("r2", "k", TRACE, ttl_s=5)
    clock.now += 10
    await store.put("r3", "k", TRACE, ttl_s=5)  # sweeps the expired r2
    assert len(store) == 1


async def test_memory_traces_are_bounded() -> None:
    store = MemoryTraceStore(max_entries=3, clock=Clock())
    for i in range(5):
        await store.put(f"r{i}", "k", {"i": i}, ttl_s=60)
    assert len(store) == 3
    assert await store.get("r1", "k") is None
    assert await store.get("r4", "k") == {"i": 4}


async def test_redis_trace_has_a_ttl(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    store = RedisTraceStore(client, prefix="t")
    await store.put("r1", "k", TRACE, ttl_s=30)
    ttl_ms = await client.pttl("t:k:r1")
    assert 0 < ttl_ms <= 30_000
    await store.close()  # a client passed in stays open
    assert await client.ping()
    await client.aclose()
