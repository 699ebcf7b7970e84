"""The Redis usage store over the pipelined connection (FastRedis) writes what redis-py writes,
and recovers when the server forgot the script."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway.accounting.redis_store import RedisUsageStore
from gateway.limits.fastredis import FastRedis, fast_target
from tests.accounting.factory import random_records


async def _dump(client: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in await client.keys(f"{prefix}:day:*") + await client.keys(f"{prefix}:key:*"):
        key = raw.decode()
        out[key[len(prefix):]] = {f.decode(): v.decode()
                                  for f, v in (await client.hgetall(key)).items()}
    out["stream"] = [fields for _, fields in await client.xrange(f"{prefix}:stream")]
    return out


async def test_fast_connection_writes_the_same_and_survives_a_script_flush(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    target = fast_target(redis_url)
    assert target is not None
    fast = RedisUsageStore(client, prefix="f:{usage}", fast=FastRedis(target))
    slow = RedisUsageStore(client, prefix="s:{usage}")
    records = random_records(70)
    try:
        for store in (fast, slow):
            assert await store.write_batch(records[:40]) == 40
            await client.script_flush()  # the next call meets NOSCRIPT and loads it again
            assert await store.write_batch(records[30:]) == 30  # 10 repeats counted once
        assert await _dump(client, "f:{usage}") == await _dump(client, "s:{usage}")
        assert len((await _dump(client, "f:{usage}"))["stream"]) == 70
    finally:
        await fast.close()
        assert fast.fast._closed  # type: ignore[union-attr]
        await client.aclose()


async def test_a_record_with_an_unencodable_string_is_still_counted(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    target = fast_target(redis_url)
    assert target is not None
    store = RedisUsageStore(client, prefix="u:{usage}", fast=FastRedis(target))
    odd, plain = random_records(2)
    odd.user = "caf\udcff"  # header bytes that were not UTF-8 decode to lone surrogates
    try:
        assert await store.write_batch([odd, plain]) == 2
        stored = await _dump(client, "u:{usage}")
        assert len(stored["stream"]) == 2
        assert any("caf\ufffd" in v for fields in stored["stream"] for v in map(
            lambda b: b.decode(), fields.values()))
        [recent] = [r for r in await store.recent(10) if r.request_id == odd.request_id]
        assert recent.user == "caf\ufffd"
    finally:
        await store.close()
        await client.aclose()
