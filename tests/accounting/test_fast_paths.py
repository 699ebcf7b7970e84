"""The per-record shortcuts of the accounting write path give exactly what the plain code gives:
the day cache, counting a record into totals without a copy, JSON lines encoded from the
dataclass itself."""
from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from gateway.accounting.jsonl import JsonlWriter
from gateway.accounting.memory_store import (MemoryUsageStore, Totals, UtcDays, day_of,
                                             key_buckets)
from gateway.accounting.record import UsageRecord
from tests.accounting.factory import DAYS, random_records

MIDNIGHTS = [d.timestamp() for d in DAYS] + [0.0, 86_400.0 * 20_000]
NEAR = [0.0, 1e-7, -1e-7, 4e-7, -4e-7, 5e-7, -5e-7, 6e-7, -6e-7, 0.0005, -0.0005, 0.001,
        -0.001, 0.0011, -0.0011, 1.0, -1.0, 43_200.0]


def test_day_cache_equals_day_of_around_midnight() -> None:
    days = UtcDays()
    rng = random.Random(3)
    stamps = [m + d for m in MIDNIGHTS for d in NEAR]
    stamps += [rng.choice(MIDNIGHTS) + rng.uniform(-90_000, 90_000) for _ in range(3000)]
    for ts in stamps + list(reversed(stamps)):  # forwards and backwards: the cache moves
        assert days(ts) == day_of(ts), ts


def of_record(r: UsageRecord) -> Totals:
    """The reference: one record as its own Totals."""
    return Totals(1, int(r.status >= 400), int(not r.priced), r.prompt_tokens,
                  r.completion_tokens, r.cached_tokens, r.reasoning_tokens, r.cost_usd)


def test_count_equals_adding_a_copy() -> None:
    records = random_records(200)
    records[0].priced = False
    fast, plain = Totals(), Totals()
    for r in records:
        fast.count(r)
        plain.add(of_record(r))
    assert fast == plain
    assert fast.errors == sum(1 for r in records if r.status >= 400) > 0
    assert fast.unpriced >= 1


async def test_memory_store_key_buckets_equal_plain_sums() -> None:
    records = random_records(300)
    store = MemoryUsageStore()
    assert await store.write_batch(records) == 300
    assert await store.write_batch(records[:10]) == 0  # counted once
    want: dict[tuple[str, str], Totals] = {}
    for r in records:
        for bucket in key_buckets(day_of(r.ts)):
            want.setdefault((r.key_id, bucket), Totals()).add(of_record(r))
    for (key, bucket), totals in want.items():
        assert await store.key_totals(key, bucket) == totals, (key, bucket)
    cells = await store.cells(sorted({day_of(r.ts) for r in records}))
    assert sum(c.totals.requests for c in cells) == 300


async def test_jsonl_line_is_to_dict_encoded(tmp_path: Path) -> None:
    records = random_records(20)
    records[0].extra["limit_scope"] = "team"
    records[1].ttft_ms = 3.25
    records[2].extra["nested"] = {"a": [1, 2], "b": None}
    path = tmp_path / "u.jsonl"
    assert await JsonlWriter(path).write_batch(records) == 20
    lines = path.read_bytes().splitlines()
    assert lines == [orjson.dumps(r.to_dict()) for r in records]
    assert UsageRecord.from_dict(orjson.loads(lines[0])) == records[0]


def test_jsonl_refuses_what_to_dict_refuses() -> None:
    r = random_records(1)[0]
    r.extra["odd"] = object()
    with pytest.raises(TypeError):
        orjson.dumps(r.to_dict())
    with pytest.raises(TypeError):
        orjson.dumps(r)
