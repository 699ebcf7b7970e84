"""The pipelined EVALSHA fast path (gateway.limits.fastredis) against a real redis-server:
same answers as redis-py, FIFO order under concurrency and cancellation, outages, NOSCRIPT."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.limits.fastredis import FLUSH_AT, FastRedis, FastTarget, fast_target, pack
from gateway.limits.redis_backend import RedisBackend
from gateway.limits.redis_plan import merge_settles
from gateway.limits.spec import Decision, LimitCheck, QuotaCheck, quota_slot
from tests.limits.conftest import T0
from tests.redis_fixture import RedisServer

Pair = tuple[RedisBackend, RedisBackend]


def shape(d: Decision) -> tuple[Any, ...]:
    """What a caller sees of a decision (the reservation's keys differ by prefix)."""
    return (d.ok, d.refused_scope, d.refused_ident, d.quota_exceeded, d.retry_after_s,
            d.requests, d.tokens)


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[Pair]:
    """A backend on the fast path and one on redis-py only, on separate key prefixes."""
    fast = RedisBackend.from_url(redis_url, prefix="f", clock=lambda: T0)
    slow = RedisBackend.from_url(redis_url, prefix="s", clock=lambda: T0)
    slow.fast = None
    assert fast.fast is not None
    for b in (fast, slow):
        await b.start()
    yield fast, slow
    for b in (fast, slow):
        await b.close()


def call(i: int) -> tuple[list[LimitCheck], int]:
    """Call i: four scopes, the key's rpm i+1 so every reply is distinct."""
    return ([LimitCheck("key", f"k{i}", i + 1, 10_000 + i), LimitCheck("team", f"t{i}", 500, None),
             LimitCheck("model", f"m{i}", None, 50_000), LimitCheck("provider", f"p{i}", 900, None)],
            i % 17)


def test_fast_target_only_for_plain_standalone_urls() -> None:
    t = fast_target("redis://:s%40cret@10.0.0.5:6380/3")
    assert t == FastTarget("10.0.0.5", 6380, 3, None, "s@cret")
    assert "cret" not in repr(t)
    assert fast_target("redis://user:pw@h") == FastTarget("h", 6379, 0, "user", "pw")
    assert fast_target("redis://h:1?db=4") == FastTarget("h", 1, 4)
    for url in ("rediss://h:1/0", "redis://h:1/0?cluster=1", "redis+cluster://h:1/0",
                "rediss+cluster://h:1", "unix:///tmp/r.sock"):
        assert fast_target(url) is None, url
    assert RedisBackend.from_url("rediss://127.0.0.1:1/0").fast is None
    assert RedisBackend.from_url("redis://127.0.0.1:1/0?cluster=1").fast is None


async def test_same_decisions_as_redis_py(pair: Pair) -> None:
    fast, slow = pair
    seq: list[tuple[list[LimitCheck], int, list[QuotaCheck]]] = [
        ([LimitCheck("key", "a", 2, 100)], 40, []),
        ([LimitCheck("key", "a", 2, 100), LimitCheck("team", "t", 5, None)], 40, []),
        ([LimitCheck("key", "a", 2, 100)], 40, []),  # refused: rpm spent
        ([LimitCheck("key", "b", None, 100)], 60, []),
        ([LimitCheck("key", "b", None, 100)], 60, []),  # refused: tpm
        ([LimitCheck("key", "c", 10, None)], 1, [QuotaCheck("key", "c", tokens=5, period="day")]),
    ]
    seen = []
    for checks, est, quotas in seq:
        a = await fast.acquire(checks, est, quotas)
        b = await slow.acquire(checks, est, quotas)
        assert shape(a) == shape(b)
        seen.append(a.ok)
    assert seen == [True, True, False, True, False, True]


async def test_200_concurrent_calls_resolve_in_order(pair: Pair) -> None:
    fast, slow = pair
    got = await asyncio.gather(*(fast.acquire(*call(i)) for i in range(200)))
    for i, d in enumerate(got):
        want = await slow.acquire(*call(i))
        assert shape(d) == shape(want), i
        assert d.requests is not None and d.requests.limit == min(i + 1, 500)
    # the raw replies too: one connection, 200 pipelined EVALSHAs
    assert fast.fast is not None
    sha = fast._acquire.sha
    raw = await asyncio.gather(*(fast.fast.evalsha(sha, [f"x{i}"], ["", f"1 0 0 {i + 1} -1"])
                                 for i in range(200)))
    for i, r in enumerate(raw):
        assert r == await slow._acquire(keys=[f"y{i}"], args=["", f"1 0 0 {i + 1} -1"])
        assert r[3:5] == [i + 1, i]


async def pending_count(fr: FastRedis) -> int:
    return len(fr._proto.pending) if fr._proto is not None else 0


async def wait_until(cond: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while not await cond():
            await asyncio.sleep(0)


async def test_cancelled_call_does_not_shift_replies(pair: Pair) -> None:
    fast, slow = pair
    assert fast.fast is not None
    await fast.acquire(*call(99))  # connected
    tasks = [asyncio.create_task(fast.acquire(*call(i))) for i in range(3)]

    async def all_sent() -> bool:
        return await pending_count(fast.fast) == 3  # type: ignore[arg-type]
    await wait_until(all_sent)
    assert not any(t.done() for t in tasks)
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    for i in (0, 2):
        assert shape(await tasks[i]) == shape(await slow.acquire(*call(i)))
    assert shape(await fast.acquire(*call(3))) == shape(await slow.acquire(*call(3)))
    assert await pending_count(fast.fast) == 0
    # the cancelled call did reach Redis: its key is consumed on both sides alike
    assert shape(await fast.acquire(*call(1))) == shape(
        await slow.acquire(*call(1)) and await slow.acquire(*call(1)))


async def test_server_restart_fails_pending_calls_then_reconnects(own_redis: RedisServer) -> None:
    b = RedisBackend.from_url(own_redis.url, clock=lambda: T0)
    admin = Redis.from_url(own_redis.url)
    await b.start()
    try:
        assert b.fast is not None
        assert (await b.acquire(*call(0))).ok
        await admin.execute_command("CLIENT", "PAUSE", "10000", "ALL")  # hold the replies
        tasks = [asyncio.create_task(b.acquire(*call(i))) for i in range(1, 21)]

        async def all_sent() -> bool:
            return await pending_count(b.fast) == 20  # type: ignore[arg-type]
        await wait_until(all_sent)
        own_redis.stop()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in res), res
        with pytest.raises(RedisConnectionError):
            await b.acquire(*call(0))  # down: connection refused
        own_redis.start()  # a fresh server: empty, no scripts (NOSCRIPT -> redis-py loads it)
        # redis-py's idle pooled connection died too: the fast path's failure dropped it, so
        # the failover probe's PING succeeds at once instead of failing once on a dead socket
        assert await b.ping()
        d = await b.acquire(*call(5))
        assert d.ok and d.requests is not None and d.requests.remaining == 5
        d = await b.acquire(*call(5))
        assert d.requests is not None and d.requests.remaining == 4
        assert await pending_count(b.fast) == 0
        assert b.fast._proto is not None and not b.fast._proto.closed  # reconnected
    finally:
        await admin.aclose()
        await b.close()


async def test_noscript_recovers_and_error_replies_raise(pair: Pair, redis_url: str) -> None:
    fast, slow = pair
    assert fast.fast is not None
    assert (await fast.acquire(*call(0))).ok
    admin = Redis.from_url(redis_url)
    try:
        await admin.script_flush()
        with pytest.raises(NoScriptError):
            await fast.fast.evalsha(fast._acquire.sha, ["z"], ["", "1 0 0 5 -1"])
        d = await fast.acquire(*call(0))  # falls back to redis-py, which loads the script
        assert shape(d) == shape(await slow.acquire(*call(0)) and await slow.acquire(*call(0)))
        assert (await fast.acquire(*call(1))).ok  # and the fast path works again
        boom = await admin.script_load("return redis.error_reply('boom here')")
        with pytest.raises(ResponseError, match="boom here"):
            await fast.fast.evalsha(boom, [], [])
        assert await fast.fast.evalsha(fast._acquire.sha, ["z2"], ["", "1 0 0 5 -1"]) \
            == await slow._acquire(keys=["z3"], args=["", "1 0 0 5 -1"])
    finally:
        await admin.aclose()


async def test_auth_and_db_from_the_url(own_redis: RedisServer) -> None:
    own_redis.cli("CONFIG", "SET", "requirepass", "pa:ss")
    url = f"redis://:pa%3Ass@127.0.0.1:{own_redis.port}/3"
    b = RedisBackend.from_url(url, prefix="au", clock=lambda: T0)
    db3 = Redis.from_url(url)
    try:
        await b.start()
        assert b.fast is not None and b.fast.target.db == 3
        assert (await b.acquire([LimitCheck("key", "a", 3, None)], 0)).ok
        assert await db3.keys("au:*") == [b"au:rl:{k:a}:key:a"]
        wrong = FastRedis(FastTarget("127.0.0.1", own_redis.port, 0, None, "nope"))
        with pytest.raises(ResponseError):
            await wrong.evalsha(b._acquire.sha, [], [])
        await wrong.close()
    finally:
        await db3.aclose()
        await b.close()


async def test_reconciles_go_through_the_fast_path_and_survive_noscript(pair: Pair,
                                                                       redis_url: str) -> None:
    fast, slow = pair
    for flush_first in (False, True):  # the second round runs after SCRIPT FLUSH
        if flush_first:
            admin = Redis.from_url(redis_url)
            await admin.script_flush()
            await admin.aclose()
        results = []
        for b in (fast, slow):
            checks = [LimitCheck("key", f"rk{flush_first}", None, 10_000)]
            ds = [await b.acquire(checks, 500) for _ in range(6)]
            for d in ds:
                assert d.reservation is not None
                b.reconcile_soon(d.reservation, 100)
            await b._bg.drain()
            after = await b.acquire(checks, 0)
            assert after.tokens is not None
            results.append(after.tokens.remaining)
        assert results[0] == results[1] == 10_000 - 6 * 100  # every estimate refunded but 100


def recorded_writes(fast: FastRedis) -> tuple[Any, list[bytes]]:
    """The open connection of `fast` and the list its transport's writes are recorded in."""
    proto = fast._proto
    assert proto is not None and proto.transport is not None
    writes: list[bytes] = []
    real_write = proto.transport.write
    proto.transport.write = lambda data: (writes.append(data), real_write(data))[1]  # type: ignore[method-assign]
    return proto, writes


async def test_evalsha_many_is_one_write_with_a_reply_or_error_per_call(
        pair: Pair, redis_url: str) -> None:
    fast, slow = pair
    assert fast.fast is not None
    admin = Redis.from_url(redis_url)
    try:
        picky = await admin.script_load(
            "if ARGV[1] == 'bad' then return redis.error_reply('bad call') end "
            "return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await fast.fast.evalsha(picky, ["warm"], [1])  # connected before counting writes
        proto, writes = recorded_writes(fast.fast)
        got = await fast.fast.evalsha_many(picky, [(["n1"], [2]), (["n1"], ["bad"]),
                                                   (["n1"], [5]), (["n2"], [7])])
        assert len(writes) == 1 and writes[0].count(b"EVALSHA") == 4
        assert got[0] == 2 and got[2] == 7 and got[3] == 7
        assert isinstance(got[1], ResponseError) and "bad call" in str(got[1])
        assert await admin.get("n1") == b"7"
        assert await fast.fast.evalsha(picky, ["n2"], [1]) == 8  # replies still in step
    finally:
        await admin.aclose()


async def test_calls_of_one_loop_iteration_leave_in_one_write(pair: Pair, redis_url: str) -> None:
    """A command sent while none is in flight leaves at once; those sent behind it in the same
    event-loop iteration go to Redis together when the iteration ends, or FLUSH_AT at a time
    as soon as that many are held. Each still gets its own reply, in order."""
    fast, _ = pair
    assert fast.fast is not None
    admin = Redis.from_url(redis_url)
    try:
        incr = await admin.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await fast.fast.evalsha(incr, ["warm"], [1])  # connected before counting writes
        proto, writes = recorded_writes(fast.fast)
        got = await asyncio.gather(*(fast.fast.evalsha(incr, ["c"], [i]) for i in range(1, 21)))
        assert FLUSH_AT == 8
        assert [w.count(b"EVALSHA") for w in writes] == [1, 8, 8, 3]
        assert list(got) == [sum(range(1, i + 1)) for i in range(1, 21)]  # in send order
        assert await fast.fast.evalsha(incr, ["c"], [1]) == 211  # alone: at once
        assert [w.count(b"EVALSHA") for w in writes] == [1, 8, 8, 3, 1]
        # a dropped connection: a command still waiting for the iteration's write fails and
        # is never sent (the first, written at once, fails too: its reply cannot come)
        at_once = asyncio.ensure_future(fast.fast.evalsha(incr, ["c"], [1000]))
        behind = asyncio.ensure_future(fast.fast.evalsha(incr, ["c"], [1000]))
        await asyncio.sleep(0)  # both tasks send: the first is written, the second waits
        assert [w.count(b"EVALSHA") for w in writes] == [1, 8, 8, 3, 1, 1]
        proto.abort()
        for task in (at_once, behind):
            with pytest.raises(RedisConnectionError):
                await task
        assert [w.count(b"EVALSHA") for w in writes] == [1, 8, 8, 3, 1, 1]  # nothing more went out
        with pytest.raises(RedisConnectionError):
            await proto.send(b"*1\r\n$4\r\nPING\r\n")
    finally:
        await admin.aclose()


def test_settles_of_one_flush_merge_per_key_set() -> None:
    """Settles queued together for the same keys and limits become one: token deltas, quota
    tokens and USD summed; other keys, limits or periods stay apart."""
    b = RedisBackend.from_url("redis://127.0.0.1:1/0")  # planning only: never connects
    key, team = LimitCheck("key", "k", 60, 1000), LimitCheck("team", "t", None, 5000)
    quota = QuotaCheck("key", "k", tokens=None, usd=2.0, period="day")
    (g,) = b._groups((key, team), (quota_slot(quota, T0),))
    (same,) = b._plan((key, team), (quota_slot(quota, T0),))  # built again: equal, not identical
    (other_key,) = b._groups((LimitCheck("key", "k2", 60, 1000), team), ())
    (other_limit,) = b._groups((LimitCheck("key", "k", 61, 1000), team), ())
    (other_period,) = b._groups((key, team), (quota_slot(quota, T0 + 86_400),))
    assert b._groups((key, team), (quota_slot(quota, T0),))[0] is g  # remembered
    merged = merge_settles([(g, 30, 120, 0.5), (other_key, 5, 5, 0.0), (same, -10, 80, 0.25),
                            (other_limit, 1, 1, 0.0), (other_period, 2, 2, 0.125)])
    assert merged == [(g, 20, 200, 0.75), (other_key, 5, 5, 0.0), (other_limit, 1, 1, 0.0),
                      (other_period, 2, 2, 0.125)]
    assert merge_settles([(g, 1, 2, 0.0)]) == [(g, 1, 2, 0.0)]
    (lone,) = b._groups((LimitCheck("key", "solo", 60, 1000),), ())
    assert merge_settles([(lone, -7, 0, 0.0)] * 3) == [(lone, -21, 0, 0.0)]
    assert b._settle_args(g, 20, 0, 200, 0.75) == [
        "", 2, 1, 20, 0, "60", "1000", "-1", "5000", 200, "0.75", 0, quota_slot(quota, T0).expire_at]


async def test_hot_path_sends_one_prepacked_command_per_request(redis_url: str) -> None:
    """With the server's clock, a single-group acquire writes the group's command packed once
    and completed with the estimate: the same bytes redis-py's packer makes, and the same
    answers as redis-py."""
    fast = RedisBackend.from_url(redis_url, prefix="hot")
    slow = RedisBackend.from_url(redis_url, prefix="cold")
    slow.fast = None
    for b in (fast, slow):
        await b.start()
    try:
        assert fast.fast is not None
        checks = [LimitCheck("key", "k{1}%", 3, None), LimitCheck("team", "t", 100, 100_000)]
        assert (await fast.acquire(checks, 10)).ok  # connected
        proto, writes = recorded_writes(fast.fast)
        d = await fast.acquire(checks, 1234)
        (g,) = fast._groups(tuple(checks), ())
        assert writes == [pack(("EVALSHA", fast._acquire.sha, 2, *g.keys, "",
                                "2 0 1234 3 -1 100 100000"))]
        assert g.keys == ["hot:rl:{k:k%7B1%7D%25}:key:k%7B1%7D%25", "hot:rl:{t:t}:team:t"]
        for est in (10, 1234, 7):
            assert (await slow.acquire(checks, est)).ok
        last = await fast.acquire(checks, 7)
        assert last.ok and last.requests is not None and last.requests.remaining == 0
        want, got = await slow.acquire(checks, 7), await fast.acquire(checks, 7)
        assert not got.ok and got.refused_scope == "key" and got.refused_ident == "k{1}%"
        assert got.requests is not None and want.requests is not None
        assert got.tokens is not None and want.tokens is not None
        assert (got.ok, got.refused_scope, got.requests.remaining, got.tokens.limit) == (
            want.ok, want.refused_scope, want.requests.remaining, want.tokens.limit)
        # tokens refill with the server's clock, 1.7 a millisecond: the two runs differ a little
        assert abs(got.tokens.remaining - want.tokens.remaining) < 100
        assert got.tokens.remaining <= 100_000 - 10 - 1234 - 7 + 100
        assert 19.9 < got.retry_after_s <= 20 and 19.9 < want.retry_after_s <= 20  # 3 a minute
        assert d.ok and d.requests is not None and d.requests.remaining == 1
        assert d.tokens is not None and d.tokens.remaining == 100_000 - 10 - 1234
    finally:
        for b in (fast, slow):
            await b.close()
