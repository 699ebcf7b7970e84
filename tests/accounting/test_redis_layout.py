"""What the Redis usage store leaves in Redis, key by key, against a plain Python reference:
one script call per batch, the raw records in the stream as `to_dict()` JSON, the per-day cell
metrics and per-key buckets as the documented fields, a seen key per counted record."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from gateway.accounting.memory_store import METRICS, day_of, dedup_id
from gateway.accounting.record import UsageRecord
from gateway.accounting.redis_store import SCRIPT_RECORDS, RedisUsageStore
from tests.accounting.factory import random_records

PREFIX = "t:{usage}"


def reference(records: list[UsageRecord]) -> dict[str, dict[str, float]]:
    """hash key -> field -> number, computed from the records by hand."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        day = day_of(r.ts)
        cell = orjson.dumps([r.key_id, r.team, r.model, r.provider, r.user]).decode()
        values = {"requests": 1, "errors": int(r.status >= 400), "unpriced": int(not r.priced),
                  "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                  "cached_tokens": r.cached_tokens, "reasoning_tokens": r.reasoning_tokens,
                  "cost_usd": r.cost_usd}
        for metric in METRICS:
            if values[metric]:
                fields = out.setdefault(f"{PREFIX}:day:{day}", {})
                fields[f"{metric}|{cell}"] = fields.get(f"{metric}|{cell}", 0) + values[metric]
                per_key = out.setdefault(f"{PREFIX}:key:{r.key_id}", {})
                for bucket in ("total", day[:7], day):
                    name = f"{bucket}|{metric}"
                    per_key[name] = per_key.get(name, 0) + values[metric]
    return out


async def _hashes(client: Any) -> dict[str, dict[str, float]]:
    out = {}
    for raw in await client.keys(f"{PREFIX}:day:*") + await client.keys(f"{PREFIX}:key:*"):
        name = raw.decode()
        out[name] = {f.decode(): float(v) for f, v in (await client.hgetall(name)).items()}
    return out


async def test_redis_contents_equal_reference(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    store = RedisUsageStore(client, prefix=PREFIX, retention_days=30)
    records = random_records(120)
    records[0].extra["limit_scope"] = "team \"q\" \u00e9"
    records[1].user = 'us|er "x" [1]'
    batches = [records[:50], records[40:90] + records[:3], records[90:]]
    before = await client.info("commandstats")
    counted = [await store.write_batch(b) for b in batches]
    assert counted == [50, 40, 30]  # the repeats were counted once
    stats = await client.info("commandstats")
    calls = {k: v["calls"] - before.get(k, {"calls": 0})["calls"] for k, v in stats.items()}
    # one script call per SCRIPT_RECORDS records of each batch (plus one refused before the
    # script was loaded); the script's own commands are counted in commandstats too, no other
    # client command is
    chunks = sum(-(-len(b) // SCRIPT_RECORDS) for b in batches)
    assert chunks == 4 + 4 + 2
    assert calls["cmdstat_evalsha"] - calls.get("cmdstat_script|load", 0) == chunks
    assert calls["cmdstat_xadd"] == 120 and calls["cmdstat_set"] == 133  # one SET NX per record sent

    stream = await client.xrange(f"{PREFIX}:stream")
    assert [d[b"r"] for _, d in stream] == [orjson.dumps(r.to_dict()) for r in records]
    got, want = await _hashes(client), reference(records)
    assert set(got) == set(want)
    for name, fields in want.items():
        assert set(got[name]) == set(fields), name
        for field, value in fields.items():
            assert got[name][field] == pytest.approx(value, rel=1e-12, abs=1e-15), (name, field)
    for r in records:
        assert await client.ttl(f"{PREFIX}:seen:{dedup_id(r)}") > 0
    for name in want:
        if ":day:" in name:
            assert 0 < await client.ttl(name) <= 30 * 86_400
    await client.aclose()


async def test_one_increment_per_field_per_chunk_and_exact_big_sums(redis_url: str) -> None:
    """A chunk's records that share a cell add to each hash field once (the script sums them);
    sums that would pass 2^53 (where doubles stop being exact) are written in parts, exactly."""
    client = aioredis.from_url(redis_url)
    store = RedisUsageStore(client, prefix=PREFIX)
    same = random_records(1)[0]
    records = []
    for i in range(SCRIPT_RECORDS):
        r = UsageRecord.from_dict({**same.to_dict(), "request_id": f"same-{i}"})
        r.prompt_tokens = 2**53 - 1 if i < 3 else 7  # three near-2^53 counts: two parts
        records.append(r)
    before = await client.info("commandstats")
    assert await store.write_batch(records) == SCRIPT_RECORDS
    stats = await client.info("commandstats")
    calls = {k: v["calls"] - before.get(k, {"calls": 0})["calls"] for k, v in stats.items()}
    want = reference(records)
    fields = [f for per_hash in want.values() for f in per_hash]
    floats = [f for f in fields if "cost_usd" in f]
    assert len(fields) - len(floats) >= 8  # requests and prompt_tokens at least, 4 fields each
    # one increment per field for the 16 records, but the 4 prompt_tokens fields in 4 parts
    # (each 2^53-1 count starts a new part, and so does the first 7 after the last of them)
    assert calls["cmdstat_hincrby"] == len(fields) - len(floats) + 4 * 3
    assert calls["cmdstat_hincrbyfloat"] == len(floats)
    got = {}
    for name in want:
        got[name] = {f.decode(): v.decode() for f, v in (await client.hgetall(name)).items()}
    for name, fields in want.items():
        for field, value in fields.items():
            if field.startswith("cost_usd") or field.endswith("cost_usd"):
                assert float(got[name][field]) == pytest.approx(value, rel=1e-12)
            else:
                assert int(got[name][field]) == value, (name, field)  # exact, as integers
    await client.aclose()
