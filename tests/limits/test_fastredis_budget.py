"""The pipelined connection's per-call budget: one watchdog timer for every pending deadline."""
from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from gateway.limits.redis_backend import RedisBackend
from tests.limits.conftest import T0
from tests.redis_fixture import RedisServer

ARGS = ["", "1 0 0 5 -1"]  # one rpm limit of 5, no quota


async def test_timed_out_calls_fail_on_time_and_their_late_replies_are_skipped(
        own_redis: RedisServer) -> None:
    b = RedisBackend.from_url(own_redis.url, prefix="w", clock=lambda: T0)
    await b.start()
    admin = Redis.from_url(own_redis.url)
    fast = b.fast
    assert fast is not None
    sha = b._acquire.sha
    try:
        first = await fast.evalsha(sha, ["a"], ARGS, 0.5)  # connected; 1 of 5 used
        await admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
        started = time.monotonic()
        long = asyncio.create_task(fast.evalsha(sha, ["a"], ARGS, 2.0))
        short = asyncio.create_task(fast.evalsha(sha, ["a"], ARGS, 0.05))  # armed earlier
        with pytest.raises(TimeoutError):
            await short
        assert time.monotonic() - started < 0.3  # its own budget, not the long call's
        assert not long.done()
        late = await long  # answered after the pause; the short call's reply (next) is skipped
        assert time.monotonic() - started >= 0.3
        again = await fast.evalsha(sha, ["a"], ARGS)
        # every call reached Redis, the timed-out one too (remaining 2, unseen)
        assert [r[4] for r in (first, late, again)] == [4, 3, 1]
        assert fast._proto is not None and not fast._proto.pending
        fast._proto._expire()  # the long call's timer, when it fires: nothing left to watch
        assert fast._proto._watch is None
    finally:
        await admin.aclose()
        await b.close()
