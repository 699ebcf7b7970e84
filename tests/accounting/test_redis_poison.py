"""The Redis usage script and what Redis itself refuses: a key of the wrong type fails the chunk
before anything is written (so the sink drops only the records that count there, and says so),
and an increment that fails late (an integer overflow) does not keep the others from landing."""
from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from gateway.accounting.memory_store import dedup_id
from gateway.accounting.redis_store import RedisUsageStore
from gateway.accounting.sink import UsageSink
from tests.accounting.factory import make_record

PREFIX = "p:{usage}"


def sink_for(store: RedisUsageStore, drops: list[int]) -> UsageSink:
    return UsageSink(store, batch_size=16, linger_s=0, backoff_initial_s=0.001,
                     backoff_max_s=0.01, on_drop=drops.append)


async def test_a_hash_of_another_type_costs_only_its_own_records(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.from_url(redis_url)
    await client.set(f"{PREFIX}:key:k-5", "not a hash")  # record 5's per-key hash
    store = RedisUsageStore(client, prefix=PREFIX)
    drops: list[int] = []
    sink = sink_for(store, drops)
    await sink.start()
    for i in range(8):
        sink.submit(make_record(i, key=f"k-{i}"))
    assert await sink.flush(timeout_s=10)
    for i in range(8):
        got = await client.hget(f"{PREFIX}:key:k-{i}", "total|requests") if i != 5 else None
        assert got == (None if i == 5 else b"1"), i
    assert (sink.dropped, sink.unwritable, drops) == (1, 1, [1])
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 1 and "req-5" in dropped[0] and "WRONGTYPE" in dropped[0]
    assert await client.xlen(f"{PREFIX}:stream") == 7  # the refused record left no trace
    assert not await client.exists(f"{PREFIX}:seen:{dedup_id(make_record(5, key='k-5'))}")
    assert await client.exists(f"{PREFIX}:seen:{dedup_id(make_record(4, key='k-4'))}")
    await sink.close()
    await client.aclose()


async def test_an_increment_that_fails_late_spares_the_others(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.from_url(redis_url)
    await client.hset(f"{PREFIX}:key:k-big", "total|prompt_tokens", str(2**63 - 50))
    store = RedisUsageStore(client, prefix=PREFIX)
    records = [make_record(i, key="k-big", prompt=100) for i in range(4)]
    assert await store.write_batch(records) == 4
    assert await client.hget(f"{PREFIX}:key:k-big", "total|prompt_tokens") == str(2**63 - 50).encode()
    assert await client.hget(f"{PREFIX}:key:k-big", "total|requests") == b"4"
    [day] = [k for k in await client.keys(f"{PREFIX}:day:*")]
    fields = await client.hgetall(day)
    assert sum(int(v) for f, v in fields.items() if f.startswith(b"requests|")) == 4
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith("usage: 1 usage increments could not be written to Redis")
    assert "total|prompt_tokens" in line and "overflow" in line
    assert await store.write_batch(records) == 0  # and they stay counted once
    await client.aclose()
