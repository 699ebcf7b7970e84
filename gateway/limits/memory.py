"""In-process state backend: the algorithm of `spec` on plain dicts, for one process.

Atomic because `acquire` never awaits between checking and consuming. Also the per-replica
fallback of the Redis backend while Redis is down.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from gateway.limits.spec import (
    Decision, LimitCheck, QuotaCheck, QuotaSlot, QuotaUsage, Reservation, Window, active_limits,
    quota_slot, window_of,
)

Clock = Callable[[], float]


class _Bucket:
    __slots__ = ("r", "t", "ts")

    def __init__(self, r: float, t: float, ts: float) -> None:
        self.r, self.t, self.ts = r, t, ts

    def refill(self, rpm: int | None, tpm: int | None, now: float) -> None:
        elapsed = now - self.ts
        if elapsed > 0:
            self.ts = now
        else:
            elapsed = 0.0
        if rpm is not None:  # capped at the limit (also when the limit was lowered)
            r = self.r + elapsed * rpm / 60.0 if elapsed else self.r
            self.r = r if r < rpm else float(rpm)
        if tpm is not None:
            t = self.t + elapsed * tpm / 60.0 if elapsed else self.t
            self.t = t if t < tpm else float(tpm)


class _Usage:
    __slots__ = ("req", "tok", "usd", "expire_at")

    def __init__(self, expire_at: int) -> None:
        self.req, self.tok, self.usd, self.expire_at = 0, 0, 0.0, expire_at


def _wait_s(check: LimitCheck, b: _Bucket, estimate: int) -> float:
    wait = 0.0
    rpm, tpm = check.rpm, check.tpm
    if rpm is not None and b.r < 1:
        wait = 60.0 if rpm <= 0 else (1 - b.r) * 60.0 / rpm
    if tpm is not None:
        need = estimate if estimate < tpm else tpm
        if b.t < need:
            w = 60.0 if tpm <= 0 else (need - b.t) * 60.0 / tpm
            if w > wait:
                wait = w
    return wait


class MemoryBackend:
    """`StateBackend` in this process. `clock` (unix seconds) is injectable for tests."""

    name = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or time.time
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._usage: dict[tuple[str, str, str], _Usage] = {}
        self._cooldowns: dict[str, float] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ limits and quotas

    def _bucket(self, c: LimitCheck, now: float) -> _Bucket:
        key = (c.scope, c.ident)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(c.rpm or 0), float(c.tpm or 0), now)
        b.refill(c.rpm, c.tpm, now)
        return b

    def _usage_of(self, slot: QuotaSlot, create: bool) -> _Usage | None:
        key = (slot.check.scope, slot.check.ident, slot.period_key)
        u = self._usage.get(key)
        if u is None and create:
            self._prune_usage()
            u = self._usage[key] = _Usage(slot.expire_at)
        return u

    def _prune_usage(self) -> None:
        now = self._clock()
        for k in [k for k, u in self._usage.items() if u.expire_at and u.expire_at < now]:
            del self._usage[k]

    def _quota_refusal(self, slots: Sequence[QuotaSlot]) -> QuotaSlot | None:
        for s in slots:
            u = self._usage_of(s, create=False)
            if u is None:
                continue
            if (s.check.tokens is not None and u.tok >= s.check.tokens) or (
                    s.check.usd is not None and u.usd >= s.check.usd):
                return s
        return None

    def acquire_now(
        self, checks: Sequence[LimitCheck], estimate_tokens: int,
        quotas: Sequence[QuotaCheck] = (),
    ) -> Decision:
        """Synchronous `acquire` (no await inside: atomic on the event loop)."""
        now = self._clock()
        limits = active_limits(checks)
        est = max(0, int(estimate_tokens))
        buckets = [self._bucket(c, now) for c in limits]
        worst: LimitCheck | None = None
        wait = 0.0
        for c, b in zip(limits, buckets):  # the scope that needs the longest wait refuses
            w = _wait_s(c, b, est)
            if w > wait:
                worst, wait = c, w
        slots = tuple(quota_slot(q, now) for q in quotas) if quotas else ()
        if slots:
            spent = self._quota_refusal(slots)
            if spent is not None:
                return Decision(False, refused_scope=spent.check.scope,
                                refused_ident=spent.check.ident, quota_exceeded=True)
        if worst is not None:
            req, tok = _windows(limits, buckets)
            return Decision(False, refused_scope=worst.scope, refused_ident=worst.ident,
                            retry_after_s=wait, requests=req, tokens=tok)
        for c, b in zip(limits, buckets):
            if c.rpm is not None:
                b.r -= 1
            if c.tpm is not None:
                b.t -= est
        for s in slots:
            u = self._usage_of(s, create=True)
            assert u is not None
            u.req += 1
        req, tok = _windows(limits, buckets)
        return Decision(True, Reservation(limits, slots, est, self.name), requests=req, tokens=tok)

    async def acquire(
        self, checks: Sequence[LimitCheck], estimate_tokens: int,
        quotas: Sequence[QuotaCheck] = (),
    ) -> Decision:
        return self.acquire_now(checks, estimate_tokens, quotas)

    def settle(self, res: Reservation, token_delta: int, refund_request: bool,
               tokens: int, cost_usd: float) -> None:
        """Move token buckets by `token_delta`, refund a request, debit quotas."""
        now = self._clock()
        for c in res.limits:
            b = self._bucket(c, now)
            if c.tpm is not None:
                b.t = min(float(c.tpm), b.t - token_delta)
            if refund_request and c.rpm is not None:
                b.r = min(float(c.rpm), b.r + 1)
        for s in res.quotas:
            u = self._usage_of(s, create=True)
            assert u is not None
            u.tok += tokens
            u.usd += cost_usd
            u.req -= 1 if refund_request else 0

    async def reconcile(self, reservation: Reservation, actual_tokens: int,
                        cost_usd: float = 0.0) -> None:
        self.reconcile_soon(reservation, actual_tokens, cost_usd)

    def reconcile_soon(self, reservation: Reservation, actual_tokens: int,
                       cost_usd: float = 0.0) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        actual = max(0, int(actual_tokens))
        self.settle(reservation, actual - reservation.estimate, False, actual, cost_usd)

    async def release(self, reservation: Reservation) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        self.settle(reservation, -reservation.estimate, True, 0, 0.0)

    async def usage(self, quotas: Sequence[QuotaCheck]) -> list[QuotaUsage]:
        now = self._clock()
        out = []
        for q in quotas:
            s = quota_slot(q, now)
            u = self._usage_of(s, create=False)
            qu = QuotaUsage(q.scope, q.ident, q.period, s.period_key, limit_tokens=q.tokens,
                            limit_usd=q.usd)
            if u is not None:
                qu.requests, qu.tokens, qu.cost_usd = u.req, u.tok, round(u.usd, 9)
            out.append(qu.fill_remaining())
        return out

    # ------------------------------------------------------------------ cooldowns

    async def trip(self, target_key: str, seconds: float) -> None:
        until = self._clock() + max(0.0, seconds)
        if until > self._cooldowns.get(target_key, 0.0):
            self._cooldowns[target_key] = until

    async def cooled(self) -> dict[str, float]:
        now = self._clock()
        for k in [k for k, u in self._cooldowns.items() if u <= now]:
            del self._cooldowns[k]
        return dict(self._cooldowns)

    async def clear(self, target_key: str) -> None:
        self._cooldowns.pop(target_key, None)


def _windows(limits: Sequence[LimitCheck],
             buckets: Sequence[_Bucket]) -> tuple[Window | None, Window | None]:
    """Per dimension, the scope with the fewest left (one Window each: hot path)."""
    rc = tc = None
    rl = tl = 0.0
    for c, b in zip(limits, buckets):
        if c.rpm and (rc is None or b.r < rl):
            rc, rl = c, b.r
        if c.tpm and (tc is None or b.t < tl):
            tc, tl = c, b.t
    req = window_of(rc.scope, rc.rpm, rl) if rc is not None and rc.rpm else None
    tok = window_of(tc.scope, tc.tpm, tl) if tc is not None and tc.tpm else None
    return req, tok
