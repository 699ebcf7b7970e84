"""The Redis layout works on Redis Cluster: every key shares the `{usage}` hash tag.

Uses the local `usage_cluster` fixture: the shared `redis_cluster` fixture may pick ports above
55535, where a cluster node cannot start (its bus port would exceed 65535).
"""
from __future__ import annotations

from datetime import datetime, timezone

from gateway.accounting.query import key_spend, query
from gateway.accounting.redis_store import RedisUsageStore
from gateway.accounting.traces import RedisTraceStore
from tests.accounting.factory import expected, random_records
from tests.redis_fixture import RedisCluster


async def test_store_and_traces_on_a_cluster(usage_cluster: RedisCluster) -> None:
    store = RedisUsageStore(usage_cluster.url, prefix="modelyard:{usage-cluster-test}")
    records = random_records(120, seed=11)
    assert await store.write_batch(records) == 120
    assert await store.write_batch(records[:10]) == 0
    rows = await query(store, start=datetime(2025, 3, 1, tzinfo=timezone.utc),
                       end=datetime(2025, 3, 4, tzinfo=timezone.utc), group_by=["team"])
    want = expected(records, ["team"])
    assert {r["team"]: r["requests"] for r in rows} == {k[0]: v["requests"] for k, v in want.items()}
    spend = await key_spend(store, "k-search", "total")
    assert spend["requests"] == sum(1 for r in records if r.key_id == "k-search")
    await store.close()

    traces = RedisTraceStore(usage_cluster.url, prefix="trace-cluster-test")
    await traces.put("r1", "k", {"status": 200}, ttl_s=30)
    assert await traces.get("r1", "k") == {"status": 200}
    assert await traces.get("r1", "other") is None
    await traces.close()
