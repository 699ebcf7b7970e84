"""What a request asks of the state layer, and what it gets back.

Algorithm (the same in the Redis and the in-process backend)
-----------------------------------------------------------
Every scope (`key`, `team`, `model` = route, `provider` = upstream account) that has a limit
owns one **token bucket per dimension** (requests, tokens). A bucket holds at most the
per-minute limit and refills continuously at `limit / 60` per second, so a client that was
idle may burst up to its whole minute's budget at once and then runs at the steady rate; there
is no window edge at which twice the limit gets through.

* A request needs 1 request-token in every scope with an `rpm`, and its **token estimate** in
  every scope with a `tpm` (an estimate larger than the whole bucket needs a full bucket, so a
  huge request is slow, never refused forever).
* All scopes (and the quotas) are checked first and consumed only if **all** of them accept:
  a refusal consumes nothing anywhere. The refusal names the scope that needs the longest wait
  and that wait (`retry_after_s`).
* After the call `reconcile(reservation, actual_tokens, cost_usd)` moves the token buckets by
  `actual - estimate` (a refund when the estimate was too high; a bucket may go negative when
  it was too low, and then later requests wait until it refills).
* In Redis one Lua script does all of it atomically, using the server's `TIME`, so any number
  of gateway processes share exact limits (N+1 concurrent requests against `rpm: N` → exactly
  N accepted). A bucket's hash expires once it would be full again (absent == full).

Quotas (per key and per team) count requests, tokens and USD per calendar period in UTC
(`day`, `month`, `total`): a request is refused with `insufficient_quota` when the period's
tokens or USD are already spent; the real tokens and cost are debited by `reconcile`.
"""
from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import QuotaExceeded, RateLimited
from gateway.limits.durations import format_duration

Period = Literal["day", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "month", "total")
# how long a finished period's usage stays readable after the period ends
_PERIOD_GRACE_S = {"day": 2 * 86400, "month": 35 * 86400}


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One scope's limits for this request. `None` = no limit on that dimension."""

    scope: str  # key | team | model | provider
    ident: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """A key's or team's quota. Limits may both be `None`: usage is then only counted."""

    scope: str  # key | team
    ident: str
    tokens: int | None = None
    usd: float | None = None
    period: str = "month"


@dataclass(frozen=True, slots=True)
class QuotaSlot:
    """A quota pinned to the calendar period of one moment (what acquire/reconcile touch)."""

    check: QuotaCheck
    period_key: str  # "2026-11-05" | "2026-11" | "total"
    expire_at: int  # unix seconds, 0 = never


@dataclass(slots=True)
class Window:
    """One dimension of the `x-ratelimit-*` headers: the scope with the least left."""

    scope: str
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(slots=True)
class Reservation:
    """What `acquire` took; hand it to `reconcile` exactly once."""

    limits: tuple[LimitCheck, ...]
    quotas: tuple[QuotaSlot, ...]
    estimate: int
    origin: str  # "memory" | "redis": which backend holds it
    plan: Any = None  # backend-private (Redis: slot groups)
    settled: bool = False


@dataclass(slots=True)
class Decision:
    ok: bool
    reservation: Reservation | None = None
    refused_scope: str | None = None  # scope that refused (rate limit or quota)
    refused_ident: str | None = None
    quota_exceeded: bool = False  # True: 429 insufficient_quota, else rate_limit_exceeded
    retry_after_s: float = 0.0
    requests: Window | None = None
    tokens: Window | None = None
    degraded: bool = False  # answered by the per-process fallback while Redis is down

    def headers(self) -> dict[str, str]:
        return ratelimit_headers(self)

    def raise_for_refusal(self) -> None:
        """Raise the client-facing 429 (with the rate-limit headers) when refused."""
        if self.ok:
            return
        scope = self.refused_scope or "key"
        hdrs = self.headers()
        if self.quota_exceeded:
            raise QuotaExceeded(f"{scope} quota exhausted for the current period",
                                scope=scope, headers=hdrs)
        raise RateLimited(f"rate limit exceeded for {scope}; retry after "
                          f"{format_duration(self.retry_after_s)}",
                          scope=scope, retry_after_s=self.retry_after_s, headers=hdrs)


@dataclass(slots=True)
class QuotaUsage:
    """Usage of one quota in its current period (GET /v1/key)."""

    scope: str
    ident: str
    period: str
    period_key: str
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    limit_tokens: int | None = None
    limit_usd: float | None = None
    remaining_tokens: int | None = field(default=None)
    remaining_usd: float | None = field(default=None)

    def fill_remaining(self) -> "QuotaUsage":
        if self.limit_tokens is not None:
            self.remaining_tokens = max(0, self.limit_tokens - self.tokens)
        if self.limit_usd is not None:
            self.remaining_usd = max(0.0, round(self.limit_usd - self.cost_usd, 9))
        return self

    @property
    def exhausted(self) -> bool:
        """The period's tokens or USD are spent: the next request gets `insufficient_quota`
        (the test `acquire` makes, in both backends)."""
        return ((self.limit_tokens is not None and self.tokens >= self.limit_tokens)
                or (self.limit_usd is not None and self.cost_usd >= self.limit_usd))

    def public(self) -> dict[str, Any]:
        """One entry of `GET /v1/key`'s `quotas`."""
        self.fill_remaining()
        return {"scope": self.scope, "id": self.ident, "period": self.period,
                "period_key": self.period_key,
                "limit": {"tokens": self.limit_tokens, "usd": self.limit_usd},
                "used": {"requests": self.requests, "tokens": self.tokens,
                         "cost_usd": round(self.cost_usd, 10)},
                "remaining": {"tokens": self.remaining_tokens, "usd": self.remaining_usd},
                "exhausted": self.exhausted}


def effective_remaining(usages: Sequence[QuotaUsage]) -> dict[str, Any]:
    """What is left before `insufficient_quota`, over every quota that binds a key (its own and
    its team's): per dimension the least remaining and the scope it comes from (the first, key
    before team, on a tie; `None` when no quota caps that dimension), and the scope of the first
    spent quota (`None`: the next request is not refused for quota)."""
    out: dict[str, Any] = {"tokens": None, "usd": None, "tokens_scope": None, "usd_scope": None,
                           "exhausted_by": None}
    for u in usages:
        u.fill_remaining()
        if u.remaining_tokens is not None and (out["tokens"] is None
                                               or u.remaining_tokens < out["tokens"]):
            out["tokens"], out["tokens_scope"] = u.remaining_tokens, u.scope
        if u.remaining_usd is not None and (out["usd"] is None or u.remaining_usd < out["usd"]):
            out["usd"], out["usd_scope"] = u.remaining_usd, u.scope
        if out["exhausted_by"] is None and u.exhausted:
            out["exhausted_by"] = u.scope
    return out


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` family for the scope with the least left, per dimension.
    (Unrolled, with constant header names: this runs on every limited request.)"""
    out: dict[str, str] = {}
    w = decision.requests
    if w is not None:
        out["x-ratelimit-limit-requests"] = str(w.limit)
        out["x-ratelimit-remaining-requests"] = str(w.remaining)
        out["x-ratelimit-reset-requests"] = format_duration(w.reset_s)
    w = decision.tokens
    if w is not None:
        out["x-ratelimit-limit-tokens"] = str(w.limit)
        out["x-ratelimit-remaining-tokens"] = str(w.remaining)
        out["x-ratelimit-reset-tokens"] = format_duration(w.reset_s)
    return out


def active_limits(checks: Sequence[LimitCheck]) -> tuple[LimitCheck, ...]:
    if type(checks) is tuple:  # the common case: already filtered by the caller, no copy
        for c in checks:
            if c.rpm is None and c.tpm is None:
                break
        else:
            return checks
    return tuple(c for c in checks if c.rpm is not None or c.tpm is not None)


def quota_slot(check: QuotaCheck, now: float) -> QuotaSlot:
    """Pin a quota to the UTC calendar period containing `now` (unix seconds)."""
    if check.period == "total":
        return QuotaSlot(check, "total", 0)
    key, expire_at = _period(check.period, int(now // 86400))
    return QuotaSlot(check, key, expire_at)


@functools.lru_cache(maxsize=16)
def _period(period: str, day_index: int) -> tuple[str, int]:
    """(period key, expiry) of the UTC day `day_index` (a pure function, memoised)."""
    if period not in PERIODS:
        raise ValueError(f"quota period must be one of {PERIODS}, not {period!r}")
    day = dt.date(1970, 1, 1) + dt.timedelta(days=day_index)
    if period == "day":
        end, key = day + dt.timedelta(days=1), day.isoformat()
    else:
        end = dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
        key = f"{day.year:04d}-{day.month:02d}"
    end_s = (end - dt.date(1970, 1, 1)).days * 86400
    return key, end_s + _PERIOD_GRACE_S[period]


def window_of(scope: str, limit: int, level: float) -> Window:
    if limit > 0:
        reset = (limit - level) * 60.0 / limit
        if reset < 0.0:
            reset = 0.0
    else:
        reset = 0.0
    return Window(scope, limit, math.floor(level) if level > 0 else 0, reset)


def tighter(a: Window | None, b: Window | None) -> Window | None:
    """The window with less left (fewest remaining, then the longest reset)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if (b.remaining, -b.reset_s) < (a.remaining, -a.reset_s) else a
