"""HTTP query-string parsing and the CLI formatter."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import orjson
import pytest

from gateway.accounting.memory_store import MemoryUsageStore
from gateway.accounting.query import (
    format_rows, parse_group_by, parse_time, parse_usage_params, query,
)
from gateway.errors import InvalidRequest
from tests.accounting.factory import make_record

UTC = timezone.utc
NOW = datetime(2025, 3, 17, 15, 30, tzinfo=UTC)


def test_parse_dates_and_times() -> None:
    assert parse_time("2025-03-01", "from") == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_time("2025-03-01", "to", end=True) == datetime(2025, 3, 2, tzinfo=UTC)
    assert parse_time("2025-03-01T10:00:00Z", "from") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_time("2025-03-01T10:00:00+02:00", "to", end=True) == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2025-03-01T10:00", "from") == datetime(2025, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("params,param", [
    ({"from": "yesterday"}, "from"),
    ({"to": "2025-13-01"}, "to"),
    ({"from": "2025-03-05", "to": "2025-03-01"}, "from"),
    ({"from": "1990-01-01", "to": "2025-01-01"}, "from"),
    ({"group_by": "team,colour"}, "group_by"),
])
def test_bad_query_values_name_the_param(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_usage_params(params, now=NOW)
    assert err.value.param == param and err.value.status == 400
    assert err.value.to_json()["error"]["param"] == param


def test_defaults_and_filters() -> None:
    q = parse_usage_params({"team": "ads, search", "user": "alice", "group_by": "day,team,day"},
                           now=NOW)
    assert q.start == datetime(2025, 3, 1, tzinfo=UTC) and q.end == NOW
    assert q.filters == {"team": frozenset({"ads", "search"}), "user": frozenset({"alice"})}
    assert q.group_by == ("day", "team")
    assert parse_group_by("") == () and parse_group_by(None) == ()


async def test_parsed_query_runs() -> None:
    store = MemoryUsageStore()
    await store.write_batch([make_record(1, team="ads", key="k-ads"), make_record(2),
                             make_record(3, team="ads", key="k-ads", user="alice")])
    q = parse_usage_params({"from": "2025-03-01", "to": "2025-03-01", "team": "ads",
                            "group_by": "key,user"}, now=NOW)
    rows = await q.run(store)
    assert [(r["key"], r["user"], r["requests"]) for r in rows] == [("k-ads", "", 1),
                                                                   ("k-ads", "alice", 1)]
    with pytest.raises(InvalidRequest):
        await query(store, start=q.start, end=q.end, group_by=["colour"])


ROWS = [
    {"team": "ads", "model": "openai/gpt-4o", "requests": 12, "prompt_tokens": 1200,
     "completion_tokens": 340, "total_tokens": 1540, "cost_usd": 0.0064, "errors": 1},
    {"team": "search", "model": "", "requests": 3, "prompt_tokens": 7,
     "completion_tokens": 0, "total_tokens": 7, "cost_usd": 0.0000176, "errors": 0},
]


def test_format_table() -> None:
    out = format_rows(ROWS, "table", ["team", "model"])
    lines = out.splitlines()
    assert lines[0].split() == ["TEAM", "MODEL", "REQUESTS", "PROMPT_TOKENS",
                                "COMPLETION_TOKENS", "TOTAL_TOKENS", "COST_USD"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["ads", "openai/gpt-4o", "12", "1200", "340", "1540", "0.006400"]
    assert lines[3].split() == ["search", "-", "3", "7", "0", "7", "0.000018"]
    # numbers are right-aligned: every row ends at the same column
    assert len({len(x) for x in lines[:1] + lines[2:]}) == 1


def test_format_csv_and_json() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_rows(ROWS, "csv"))))
    assert list(parsed[0]) == ["team", "model", "requests", "prompt_tokens",
                               "completion_tokens", "total_tokens", "cost_usd"]
    assert parsed[1] == {"team": "search", "model": "", "requests": "3", "prompt_tokens": "7",
                         "completion_tokens": "0", "total_tokens": "7", "cost_usd": "1.76e-05"}
    assert orjson.loads(format_rows(ROWS, "json")) == ROWS
    assert format_rows([], "table", ["team"]).splitlines()[0].split()[:2] == ["TEAM", "REQUESTS"]
    with pytest.raises(ValueError):
        format_rows(ROWS, "xml")
