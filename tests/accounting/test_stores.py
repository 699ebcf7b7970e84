"""One suite, both stores: totals equal the sums of the submitted records."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.accounting.memory_store import UsageStore
from gateway.accounting.query import key_spend, query
from tests.accounting.factory import DAYS, expected, make_record, random_records

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
END = datetime(2025, 3, 4, tzinfo=timezone.utc)


def _index(rows: list[dict], group_by: list[str]) -> dict[tuple, dict]:
    return {tuple(row[g] for g in group_by): row for row in rows}


def _assert_rows_match(rows: list[dict], group_by: list[str], want: dict) -> None:
    got = _index(rows, group_by)
    assert set(got) == set(want)
    for group, w in want.items():
        row = got[group]
        assert row["requests"] == w["requests"], group
        assert row["prompt_tokens"] == w["prompt_tokens"], group
        assert row["completion_tokens"] == w["completion_tokens"], group
        assert row["total_tokens"] == w["prompt_tokens"] + w["completion_tokens"], group
        assert row["cost_usd"] == pytest.approx(w["cost_usd"], rel=1e-9, abs=1e-12), group


@pytest.mark.parametrize("group_by", [
    [], ["key"], ["team"], ["model"], ["provider"], ["user"], ["day"],
    ["team", "model"], ["key", "user", "day"], ["day", "provider", "model", "team", "key", "user"],
])
async def test_totals_equal_sums_of_records(store: UsageStore, group_by: list[str]) -> None:
    records = random_records(300)
    assert await store.write_batch(records[:150]) == 150
    assert await store.write_batch(records[150:]) == 150
    rows = await query(store, start=START, end=END, group_by=group_by)
    _assert_rows_match(rows, group_by, expected(records, group_by))
    assert [tuple(r[g] for g in group_by) for r in rows] == sorted(_index(rows, group_by))


@pytest.mark.parametrize("filters", [
    {"team": "ads"}, {"key": "k-search"}, {"model": "openai/gpt-4o"}, {"provider": "azure-eu"},
    {"user": "alice"}, {"team": "ads", "model": "anthropic/claude-sonnet-4-5", "user": "bob"},
])
async def test_filters(store: UsageStore, filters: dict[str, str]) -> None:
    records = random_records(300)
    await store.write_batch(records)
    rows = await query(store, start=START, end=END, group_by=["key", "day"], **filters)
    _assert_rows_match(rows, ["key", "day"], expected(records, ["key", "day"], **filters))
    assert rows  # the filters above all match something


async def test_period_covers_only_the_days_asked(store: UsageStore) -> None:
    records = random_records(200)
    await store.write_batch(records)
    rows = await query(store, start=DAYS[1], end=DAYS[2], group_by=["day"])
    want = expected(records, ["day"], day="2025-03-02")
    _assert_rows_match(rows, ["day"], want)
    # a time inside a day counts that whole day; the end is exclusive
    rows = await query(store, start=DAYS[1].replace(hour=13), end=DAYS[2].replace(hour=1),
                       group_by=["day"])
    assert [r["day"] for r in rows] == ["2025-03-02", "2025-03-03"]


async def test_empty_group_by_is_one_total_row_even_without_records(store: UsageStore) -> None:
    rows = await query(store, start=START, end=END, group_by=[])
    assert rows == [{"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                     "total_tokens": 0, "cost_usd": 0.0, "cached_tokens": 0,
                     "reasoning_tokens": 0, "errors": 0, "unpriced_requests": 0}]
    assert await query(store, start=START, end=END, group_by=["team"]) == []


async def test_cost_is_tokens_times_price_cached_at_cached_price(store: UsageStore) -> None:
    # gpt-4o: 2.50 input, 1.25 cached input, 10.00 output per million
    r = make_record(1, prompt=1_000_000, cached=400_000, completion=100_000)
    assert r.cost_usd == pytest.approx(0.6 * 2.50 + 0.4 * 1.25 + 0.1 * 10.00)
    await store.write_batch([r])
    [row] = await query(store, start=START, end=END, group_by=["model"])
    assert row["cost_usd"] == pytest.approx(3.0)
    assert row["cached_tokens"] == 400_000 and row["unpriced_requests"] == 0


async def test_route_without_price_counts_tokens_cost_zero_and_says_so(store: UsageStore) -> None:
    r = make_record(1, model="lunaby/lunaby-pro", provider="lunaby", prompt=70, completion=30)
    assert (r.cost_usd, r.priced) == (0.0, False)
    await store.write_batch([r])
    [row] = await query(store, start=START, end=END, group_by=["model"])
    assert row == {**row, "model": "lunaby/lunaby-pro", "requests": 1, "total_tokens": 100,
                   "cost_usd": 0.0, "unpriced_requests": 1}


async def test_one_record_per_request_id(store: UsageStore) -> None:
    a, b = make_record(1), make_record(2)
    assert await store.write_batch([a, a, b]) == 2
    assert await store.write_batch([a, b]) == 0  # a retried batch counts nothing twice
    # the same request id from another key is another request
    other = make_record(1, key="k-ads", team="ads")
    assert await store.write_batch([other]) == 1
    rows = await query(store, start=START, end=END, group_by=["key"])
    assert {r["key"]: r["requests"] for r in rows} == {"k-ads": 1, "k-search": 2}
    assert [r.request_id for r in await store.recent(10)] == ["req-1", "req-2", "req-1"]


async def test_errors_counted(store: UsageStore) -> None:
    await store.write_batch([make_record(1, status=502), make_record(2), make_record(3, status=429)])
    [row] = await query(store, start=START, end=END, group_by=[])
    assert (row["requests"], row["errors"]) == (3, 2)


async def test_key_spend(store: UsageStore) -> None:
    records = random_records(200)
    await store.write_batch(records)
    mine = [r for r in records if r.key_id == "k-ads"]
    now = DAYS[1].replace(hour=12)
    for period, subset in [("total", mine), ("month", mine),
                           ("day", [r for r in mine if DAYS[1].timestamp() <= r.ts < DAYS[2].timestamp()])]:
        spend = await key_spend(store, "k-ads", period, now=now)
        assert spend["requests"] == len(subset), period
        assert spend["tokens"] == sum(r.total_tokens for r in subset), period
        assert spend["cost_usd"] == pytest.approx(sum(r.cost_usd for r in subset)), period
    april = await key_spend(store, "k-ads", "month", now=datetime(2025, 4, 2, tzinfo=timezone.utc))
    assert april == {"requests": 0, "tokens": 0, "prompt_tokens": 0, "completion_tokens": 0,
                     "cost_usd": 0.0}
    assert (await key_spend(store, "nobody", "total"))["requests"] == 0


async def test_recent_returns_raw_records_newest_first(store: UsageStore) -> None:
    records = [make_record(i, user="carol") for i in range(5)]
    await store.write_batch(records)
    got = await store.recent(3)
    assert [r.request_id for r in got] == ["req-4", "req-3", "req-2"]
    assert got[0] == records[4]
