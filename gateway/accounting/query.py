"""Usage queries: `GET /admin/usage`, `GET /v1/key` spend and `modelyard usage` output.

Aggregates are per UTC day, so a period covers every day that overlaps `[start, end)`: `from`
and `to` may be dates or times, but a time inside a day counts that whole day. A date `to` is
inclusive (`to=2025-01-31` covers January 31st).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

import orjson

from gateway.accounting.memory_store import DIMENSIONS, Totals, UsageStore
from gateway.errors import InvalidRequest

GROUP_FIELDS = (*DIMENSIONS, "day")
ROW_METRICS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")
EXTRA_METRICS = ("cached_tokens", "reasoning_tokens", "errors", "unpriced_requests")
MAX_DAYS = 3_700
Filter = str | Collection[str] | None
Period = Literal["day", "month", "total"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A parsed `GET /admin/usage` query; `run(store)` answers it."""

    start: datetime
    end: datetime  # exclusive
    filters: Mapping[str, frozenset[str]]
    group_by: tuple[str, ...]

    async def run(self, store: UsageStore) -> list[dict[str, Any]]:
        return await query(store, start=self.start, end=self.end, group_by=list(self.group_by),
                           **{k: v for k, v in self.filters.items()})


def days_between(start: datetime, end: datetime) -> list[str]:
    """The UTC days (YYYY-MM-DD) overlapping [start, end)."""
    s, e = _utc(start), _utc(end)
    if e <= s:
        return []
    first = s.date()
    last = (e - timedelta(microseconds=1)).date()
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise InvalidRequest(f"the period spans {count} days; at most {MAX_DAYS}", param="from")
    return [(first + timedelta(days=i)).isoformat() for i in range(count)]


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _wanted(value: Filter) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value]) if isinstance(value, str) else frozenset(value)


def _row(group_by: list[str], group: tuple[str, ...], t: Totals) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(group_by, group))
    row.update(requests=t.requests, prompt_tokens=t.prompt_tokens,
               completion_tokens=t.completion_tokens, total_tokens=t.total_tokens,
               cost_usd=round(t.cost_usd, 10), cached_tokens=t.cached_tokens,
               reasoning_tokens=t.reasoning_tokens, errors=t.errors, unpriced_requests=t.unpriced)
    return row


async def query(
    store: UsageStore,
    *,
    start: datetime,
    end: datetime,
    key: Filter = None,
    team: Filter = None,
    model: Filter = None,
    provider: Filter = None,
    user: Filter = None,
    group_by: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Usage rows `{<group fields>, requests, prompt_tokens, completion_tokens, total_tokens,
    cost_usd, cached_tokens, reasoning_tokens, errors, unpriced_requests}` sorted by the group
    fields; an empty `group_by` gives exactly one total row. A filter is a value or a set."""
    groups_by = list(dict.fromkeys(group_by))
    bad = [g for g in groups_by if g not in GROUP_FIELDS]
    if bad:
        raise InvalidRequest(f"cannot group by {bad[0]!r} (expected {', '.join(GROUP_FIELDS)})",
                             param="group_by")
    wanted = {dim: w for dim, value in zip(DIMENSIONS, (key, team, model, provider, user))
              if (w := _wanted(value)) is not None}
    groups: dict[tuple[str, ...], Totals] = {}
    for c in await store.cells(days_between(start, end)):
        if any(c.dim(dim) not in values for dim, values in wanted.items()):
            continue
        groups.setdefault(tuple(c.dim(g) for g in groups_by), Totals()).add(c.totals)
    if not groups_by and not groups:
        groups[()] = Totals()
    return [_row(groups_by, g, groups[g]) for g in sorted(groups)]


# ---------------------------------------------------------------- GET /v1/key


def period_bucket(period: Period, now: datetime | None = None) -> str:
    today = _utc(now or datetime.now(timezone.utc)).date().isoformat()
    if period == "day":
        return today
    if period == "month":
        return today[:7]
    if period == "total":
        return "total"
    raise ValueError(f"unknown quota period {period!r} (expected day, month, total)")


async def key_spend(store: UsageStore, key_id: str, period: Period = "total",
                    now: datetime | None = None) -> dict[str, Any]:
    """A key's spend in the current UTC day/month or all time:
    `{requests, tokens, prompt_tokens, completion_tokens, cost_usd}`."""
    t = await store.key_totals(key_id, period_bucket(period, now))
    return {"requests": t.requests, "tokens": t.total_tokens, "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens, "cost_usd": round(t.cost_usd, 10)}


# ---------------------------------------------------------------- the HTTP query string


def parse_time(value: str, param: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time (UTC unless it names an offset). A date as `end` means the end
    of that day (inclusive)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(), timezone.utc)
            return start + timedelta(days=1) if end else start
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        raise InvalidRequest(f"{param}: {value!r} is not an ISO date (2025-01-31) or date-time "
                             "(2025-01-31T12:00:00Z)", param=param) from None


def parse_group_by(value: str | None) -> tuple[str, ...]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    for n in names:
        if n not in GROUP_FIELDS:
            raise InvalidRequest(f"group_by: unknown field {n!r} (expected "
                                 f"{', '.join(GROUP_FIELDS)})", param="group_by")
    return tuple(dict.fromkeys(names))


def parse_usage_params(params: Mapping[str, str], *, now: datetime | None = None) -> UsageQuery:
    """`from`, `to`, `key`, `team`, `model`, `provider`, `user` (each a value or a comma list),
    `group_by`. Defaults: from the start of the current UTC month to now."""
    now = _utc(now or datetime.now(timezone.utc))
    start = (parse_time(params["from"], "from") if params.get("from")
             else datetime(now.year, now.month, 1, tzinfo=timezone.utc))
    end = parse_time(params["to"], "to", end=True) if params.get("to") else now
    if start >= end:
        raise InvalidRequest("from: must be before to", param="from")
    days_between(start, end)  # rejects periods that are too long
    filters = {dim: frozenset(v.strip() for v in params[dim].split(","))
               for dim in DIMENSIONS if params.get(dim)}
    return UsageQuery(start, end, filters, parse_group_by(params.get("group_by")))


# ---------------------------------------------------------------- `modelyard usage` output


def _columns(rows: list[dict[str, Any]], group_by: list[str] | None) -> list[str]:
    groups = list(group_by) if group_by is not None else (
        [k for k in rows[0] if k in GROUP_FIELDS] if rows else [])
    return groups + list(ROW_METRICS)


def _cell(value: Any, column: str, *, exact: bool = False) -> str:
    if column == "cost_usd" and not exact:
        return f"{float(value or 0):.6f}"
    return "" if value is None else str(value)


def format_rows(rows: list[dict[str, Any]], fmt: str = "table",
                group_by: list[str] | None = None) -> str:
    """Render usage rows for the terminal: `table` (aligned), `csv` (header + rows) or `json`."""
    if fmt == "json":
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()
    columns = _columns(rows, group_by)
    cells = [[_cell(row.get(c), c, exact=fmt == "csv") for c in columns] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r} (expected table, csv, json)")
    numeric = [c in ROW_METRICS for c in columns]
    shown = [[v or "-" for v in line] for line in cells]
    widths = [max([len(c), *(len(line[i]) for line in shown)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line([c.upper() for c in columns]), rule, *(line(v) for v in shown)]) + "\n"
