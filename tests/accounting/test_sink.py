"""The non-blocking sink: bounded buffer, drops counted, retries, Redis outage, slow stores."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Sequence

import pytest

from gateway.accounting.memory_store import MemoryUsageStore
from gateway.accounting.query import query
from gateway.accounting.record import UsageRecord
from gateway.accounting.redis_store import RedisUsageStore
from gateway.accounting.sink import UsageSink
from tests.accounting.factory import make_record
from tests.redis_fixture import RedisServer

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
END = datetime(2025, 3, 2, tzinfo=timezone.utc)


class GatedStore(MemoryUsageStore):
    """A store whose writes wait until the test opens the gate (a slow or hung store)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls = 0
        self.batches: list[list[str]] = []

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        self.calls += 1
        await self.gate.wait()
        self.batches.append([r.request_id for r in records])
        return await super().write_batch(records)


class FailingStore(MemoryUsageStore):
    """Fails the first `failures` writes, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("store down")
        return await super().write_batch(records)


class Probe:
    """Wraps a store and signals the first failed write."""

    def __init__(self, inner: RedisUsageStore) -> None:
        self.inner = inner
        self.failed = asyncio.Event()
        self.errors = 0

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        try:
            return await self.inner.write_batch(records)
        except Exception:
            self.errors += 1
            self.failed.set()
            raise

    async def close(self) -> None:
        await self.inner.close()


async def _spin() -> None:
    """Let the background task run until it blocks (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slow_store_never_blocks_submit() -> None:
    store = GatedStore()
    sink = UsageSink(store, batch_size=10)
    await sink.start()
    accepted = [sink.submit(make_record(i)) for i in range(50)]
    await _spin()
    assert accepted == [True] * 50
    assert store.calls == 1 and store.batches == []  # the writer is stuck in its first batch
    # more submits while the store hangs: each returns at once, synchronously
    accepted = [sink.submit(make_record(i)) for i in range(50, 100)]
    assert accepted == [True] * 50 and sink.pending == 100
    store.gate.set()
    assert await sink.flush(timeout_s=10)
    assert sum(len(b) for b in store.batches) == 100
    assert max(len(b) for b in store.batches) == 10
    await sink.close()


@pytest.mark.parametrize("policy,kept", [("newest", range(0, 5)), ("oldest", range(3, 8))])
async def test_buffer_bound_drops_and_counts(policy: str, kept: range) -> None:
    store = GatedStore()
    drops: list[int] = []
    sink = UsageSink(store, max_buffer=5, drop_policy=policy, on_drop=drops.append)  # type: ignore[arg-type]
    await sink.start()
    results = [sink.submit(make_record(i)) for i in range(8)]
    assert results == ([True] * 5 + [False] * 3 if policy == "newest" else [True] * 8)
    assert sink.dropped == 3 and sum(drops) == 3 and sink.pending == 5
    store.gate.set()
    assert await sink.flush(timeout_s=10)
    assert sorted(r.request_id for r in await store.recent(100)) == sorted(f"req-{i}" for i in kept)
    await sink.close()


async def test_bound_counts_the_batch_in_flight() -> None:
    store = GatedStore()
    sink = UsageSink(store, max_buffer=4, batch_size=2)
    await sink.start()
    for i in range(2):
        sink.submit(make_record(i))
    await _spin()  # the first 2 are now in flight
    results = [sink.submit(make_record(i)) for i in range(2, 6)]
    assert results == [True, True, False, False] and sink.dropped == 2
    store.gate.set()
    assert await sink.flush(timeout_s=10)
    assert (await query(store, start=START, end=END, group_by=[]))[0]["requests"] == 4
    await sink.close()


async def test_failed_writes_are_retried_and_nothing_is_lost() -> None:
    store = FailingStore(failures=3)
    sink = UsageSink(store, batch_size=7, backoff_initial_s=0.001, backoff_max_s=0.01)
    await sink.start()
    for i in range(20):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert store.calls > 3 and sink.dropped == 0
    [row] = await query(store, start=START, end=END, group_by=[])
    assert row["requests"] == 20
    await sink.close()


async def test_duplicate_submission_counts_once() -> None:
    store = MemoryUsageStore()
    sink = UsageSink(store)
    await sink.start()
    r = make_record(1)
    assert sink.submit(r) is True
    assert sink.submit(make_record(1, prompt=999)) is False  # same request id, same key
    assert sink.duplicates == 1
    assert await sink.flush(timeout_s=10)
    [row] = await query(store, start=START, end=END, group_by=[])
    assert (row["requests"], row["prompt_tokens"]) == (1, 100)
    await sink.close()


async def test_submit_never_raises() -> None:
    sink = UsageSink(MemoryUsageStore())
    assert sink.submit(make_record(1)) is False  # not started: dropped and counted
    assert sink.dropped == 1
    await sink.start()
    assert sink.submit(None) is False  # type: ignore[arg-type]  # a bug upstream must not raise
    await sink.close()
    assert sink.submit(make_record(2)) is False and sink.dropped == 2


async def test_close_flushes() -> None:
    store = MemoryUsageStore()
    sink = UsageSink([store], batch_size=3)
    await sink.start()
    for i in range(10):
        sink.submit(make_record(i))
    await sink.close()
    assert len(await store.recent(100)) == 10 and sink.dropped == 0


async def test_close_gives_up_on_a_dead_store_and_counts_the_loss() -> None:
    store = FailingStore(failures=10**9)
    sink = UsageSink(store, backoff_initial_s=0.001, backoff_max_s=0.005)
    await sink.start()
    for i in range(4):
        sink.submit(make_record(i))
    await sink.close(timeout_s=0.05)
    assert sink.dropped == 4 and sink.pending == 0


async def test_every_writer_gets_every_record() -> None:
    a, b = MemoryUsageStore(), FailingStore(failures=2)
    sink = UsageSink([a, b], backoff_initial_s=0.001, backoff_max_s=0.01)
    await sink.start()
    for i in range(6):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert len(await a.recent(100)) == 6 and len(await b.recent(100)) == 6
    await sink.close()


async def test_redis_stopped_mid_run_loses_nothing_within_the_bound(own_redis: RedisServer) -> None:
    store = Probe(RedisUsageStore(own_redis.url))
    sink = UsageSink(store, max_buffer=1000, batch_size=50, backoff_initial_s=0.01,
                     backoff_max_s=0.05)
    await sink.start()
    sink.submit(make_record(0))
    assert await sink.flush(timeout_s=10)

    own_redis.stop()
    for i in range(1, 301):
        assert sink.submit(make_record(i, user=f"u{i % 3}"))
    await asyncio.wait_for(store.failed.wait(), 30)  # the writer hit the outage
    assert sink.pending == 300
    own_redis.start()  # no persistence: the server comes back empty
    assert await sink.flush(timeout_s=30)
    assert sink.dropped == 0 and store.errors >= 1

    rows = await query(store.inner, start=START, end=END, group_by=["user"])
    assert {r["user"]: r["requests"] for r in rows} == {"u0": 100, "u1": 100, "u2": 100}
    assert sum(r["prompt_tokens"] for r in rows) == 300 * 100
    await sink.close()


async def test_new_records_do_not_cut_a_failing_stores_backoff_short() -> None:
    store = FailingStore(failures=1)
    sink = UsageSink(store, batch_size=500, linger_s=0, backoff_initial_s=60, backoff_max_s=60)
    await sink.start()
    sink.submit(make_record(0))
    await _spin()
    assert store.calls == 1  # failed; now backing off for 30-60 s
    for i in range(1, 100):  # traffic during the outage: buffered, no retry per record
        sink.submit(make_record(i))
        await _spin()
    assert store.calls == 1
    assert await sink.flush(timeout_s=10)  # a flush retries at once
    assert store.calls == 2 and sink.dropped == 0
    [row] = await query(store, start=START, end=END, group_by=[])
    assert row["requests"] == 100
    await sink.close()
