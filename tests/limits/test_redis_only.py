"""Redis-only behaviour: several OS processes, Redis Cluster."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from gateway.limits.redis_backend import RedisBackend
from gateway.limits.spec import LimitCheck, QuotaCheck
from tests.limits.conftest import T0
from tests.redis_fixture import RedisCluster

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, sys
    from gateway.limits.redis_backend import RedisBackend
    from gateway.limits.spec import LimitCheck

    async def main(url, n):
        # a fixed script clock: no refill while the processes start at different times
        b = RedisBackend.from_url(url, clock=lambda: %r)
        await b.start()
        checks = [LimitCheck("key", "shared", 30, None), LimitCheck("team", "t", 1000, None)]
        res = await asyncio.gather(*(b.acquire(checks, 0) for _ in range(n)))
        await b.close()
        sys.stdout.write(str(sum(d.ok for d in res)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""") % T0


def test_limit_held_across_three_processes(redis_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, redis_url, "25"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        counts.append(int(out))
    assert sum(counts) == 30  # 75 attempts against rpm 30, not 3 x 30


async def test_cluster_exact_and_atomic_across_slot_groups(redis_cluster: RedisCluster) -> None:
    run = uuid.uuid4().hex[:8]
    b = RedisBackend.from_url(redis_cluster.url, clock=lambda: T0)
    await b.start()
    try:
        assert b.cluster
        checks = [LimitCheck("key", f"k-{run}", 20, 10_000),
                  LimitCheck("team", f"t-{run}", 1000, None),
                  LimitCheck("model", f"m-{run}", 1000, 100_000),
                  LimitCheck("provider", f"p-{run}", 1000, None)]
        quotas = [QuotaCheck("key", f"k-{run}", tokens=None, usd=None, period="total")]
        groups = b._plan(checks, [])
        slots = {b.client.keyslot(g.keys[0]) for g in groups}
        assert len(groups) == 4 and len(slots) == 4  # four slot groups
        res = await asyncio.gather(*(b.acquire(checks, 10, quotas) for _ in range(21)))
        assert sum(d.ok for d in res) == 20
        assert [d.refused_scope for d in res if not d.ok] == ["key"]
        # the refusal gave back what the other groups had taken: model still has 980 left
        d = await b.acquire([LimitCheck("model", f"m-{run}", 1000, 100_000)], 0)
        assert d.requests is not None and d.requests.remaining == 979
        assert d.tokens is not None and d.tokens.remaining == 100_000 - 200
        [u] = await b.usage(quotas)
        assert u.requests == 20
        await b.trip("openai:gpt-4o", 10)
        assert set(await b.cooled()) >= {"openai:gpt-4o"}
    finally:
        await b.close()


async def test_one_round_trip_per_acquire_on_standalone(redis_url: str) -> None:
    b = RedisBackend.from_url(redis_url)
    await b.start()
    try:
        checks = [LimitCheck("key", "k", 100, 10_000), LimitCheck("team", "t", 100, None),
                  LimitCheck("model", "m", 100, None), LimitCheck("provider", "p", None, 10**6)]
        quotas = [QuotaCheck("key", "k", 10**6, 10.0, "month"), QuotaCheck("team", "t")]
        await b.client.config_resetstat()
        for _ in range(5):
            assert (await b.acquire(checks, 10, quotas)).ok
        stats = await b.client.info("commandstats")
        calls = {k: v["calls"] for k, v in stats.items() if not k.startswith("cmdstat_config")}
        assert calls.get("cmdstat_evalsha") == 5  # all four scopes and both quotas: one call
        assert set(calls) <= {"cmdstat_evalsha", "cmdstat_hmget", "cmdstat_time",
                              "cmdstat_hset", "cmdstat_pexpire", "cmdstat_hincrby",
                              "cmdstat_expireat"}  # the rest runs inside the script
    finally:
        await b.close()
