"""The usage store interface, the aggregate model both stores share, and the in-process store.

Aggregates are kept per UTC day and per *cell*: one combination of (key, team, model, provider,
user). Any `group_by` over those dimensions (and `day`) with any filter is answered by summing
the cells of the days asked for, so no combination has to be foreseen at write time.
Per-key totals (all time, per month, per day) are kept separately so `GET /v1/key` is one read.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Protocol, Sequence

from gateway.accounting.record import UsageRecord

log = logging.getLogger(__name__)

DIMENSIONS = ("key", "team", "model", "provider", "user")
METRICS = ("requests", "errors", "unpriced", "prompt_tokens", "completion_tokens",
           "cached_tokens", "reasoning_tokens", "cost_usd")
Cell = tuple[str, str, str, str, str]  # key, team, model, provider, user
SECONDS_PER_DAY = 86_400


def _int(raw: Any) -> int:
    try:
        return int(raw)
    except ValueError:
        return int(float(raw))


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0  # requests answered with status >= 400
    unpriced: int = 0  # requests whose route had no price (cost recorded as 0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> "Totals":
        """From a mapping of metric name to number (or numeric string, as Redis returns)."""
        t = cls()
        for name in METRICS:
            raw = values.get(name)
            if raw is not None:
                setattr(t, name, float(raw) if name == "cost_usd" else _int(raw))
        return t

    def add(self, other: "Totals") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.unpriced += other.unpriced
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd

    def count(self, r: UsageRecord) -> None:
        """Add one record."""
        self.requests += 1
        if r.status >= 400:
            self.errors += 1
        if not r.priced:
            self.unpriced += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cached_tokens += r.cached_tokens
        self.reasoning_tokens += r.reasoning_tokens
        self.cost_usd += r.cost_usd

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in METRICS}


@dataclass(frozen=True, slots=True)
class CellDay:
    """One cell's totals on one UTC day."""

    day: str  # YYYY-MM-DD
    cell: Cell
    totals: Totals

    def dim(self, name: str) -> str:
        return self.day if name == "day" else self.cell[DIMENSIONS.index(name)]


class UsageWriter(Protocol):
    """Anything the sink can flush batches into (a store, the JSON-lines file)."""

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        """Write a batch; returns how many were newly counted. Raises to ask for a retry."""
        ...

    async def close(self) -> None: ...


class UsageStore(UsageWriter, Protocol):
    async def cells(self, days: Sequence[str]) -> list[CellDay]:
        """Every cell with activity on any of `days` (YYYY-MM-DD)."""
        ...

    async def key_totals(self, key_id: str, bucket: str) -> Totals:
        """A key's totals for a bucket: `total`, a month `YYYY-MM` or a day `YYYY-MM-DD`."""
        ...

    async def recent(self, count: int) -> list[UsageRecord]:
        """The newest raw records, newest first."""
        ...


# ---------------------------------------------------------------- helpers both stores use


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


class UtcDays:
    """`day_of` with the current day remembered: records of the same UTC day (nearly all of a
    batch) cost two comparisons instead of a datetime and a strftime each."""

    def __init__(self) -> None:
        self._last: tuple[float, float, str] = (0.0, 0.0, "")  # [lo, hi) -> day, one tuple

    def __call__(self, ts: float) -> str:
        lo, hi, day = self._last
        if lo <= ts < hi:
            return day
        day = day_of(ts)
        start = (ts // SECONDS_PER_DAY) * SECONDS_PER_DAY
        if day_of(start + 0.5) == day:  # a millisecond margin: rounding never crosses midnight
            self._last = (start + 0.001, start + SECONDS_PER_DAY - 0.001, day)
        return day


def cell_of(r: UsageRecord) -> Cell:
    return (r.key_id, r.team, r.model, r.provider, r.user)


def key_buckets(day: str) -> tuple[str, str, str]:
    """The per-key buckets a record of `day` counts in: all time, its month, its day."""
    return ("total", day[:7], day)


def dedup_key(r: UsageRecord) -> tuple[str, str]:
    """`dedup_id` for in-process sets: the same identity, without hashing."""
    return (r.key_id, r.request_id)


def dedup_id(r: UsageRecord) -> str:
    """The identity of a client request: its request id, scoped by key (ids may come from clients)."""
    raw = f"{r.key_id}\x00{r.request_id}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


# ---------------------------------------------------------------- the in-process store


class MemoryUsageStore:
    """In-process aggregates (one process only). Remembers the last `max_seen` request ids so a
    record submitted twice counts once, and keeps the last `max_recent` raw records."""

    def __init__(self, *, max_seen: int = 10_000, max_recent: int = 1000) -> None:
        self._days: dict[str, dict[Cell, Totals]] = {}
        self._keys: dict[str, dict[str, Totals]] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_seen = max_seen
        self._recent: deque[UsageRecord] = deque(maxlen=max_recent)
        self._day = UtcDays()

    def _first_time(self, r: UsageRecord) -> bool:
        ident = dedup_key(r)
        if ident in self._seen:
            return False
        self._seen[ident] = None
        while len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        return True

    def add(self, r: UsageRecord) -> bool:
        """Count one record (synchronously); False when its request id was already counted."""
        if not self._first_time(r):
            return False
        day = self._day(r.ts)
        cells = self._days.get(day)
        if cells is None:
            cells = self._days[day] = {}
        cell = (r.key_id, r.team, r.model, r.provider, r.user)
        totals = cells.get(cell)
        if totals is None:
            totals = cells[cell] = Totals()
        totals.count(r)
        per_key = self._keys.get(r.key_id)
        if per_key is None:
            per_key = self._keys[r.key_id] = {}
        for bucket in key_buckets(day):
            totals = per_key.get(bucket)
            if totals is None:
                totals = per_key[bucket] = Totals()
            totals.count(r)
        self._recent.append(r)
        return True

    def load(self, records: Iterable[UsageRecord]) -> int:
        """Replay records (e.g. a JSON-lines file at start-up); returns how many counted."""
        return sum(1 for r in records if self.add(r))

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        return sum(1 for r in records if self.add(r))

    async def cells(self, days: Sequence[str]) -> list[CellDay]:
        out: list[CellDay] = []
        for day in days:
            for cell, totals in self._days.get(day, {}).items():
                copy = Totals()
                copy.add(totals)
                out.append(CellDay(day, cell, copy))
        return out

    async def key_totals(self, key_id: str, bucket: str) -> Totals:
        copy = Totals()
        found = self._keys.get(key_id, {}).get(bucket)
        if found is not None:
            copy.add(found)
        return copy

    async def recent(self, count: int) -> list[UsageRecord]:
        return list(reversed(self._recent))[:count]

    async def close(self) -> None:
        return None
