"""The pipeline's view of limits and quotas: reserve before the call, reconcile after.

`Limiter.acquire(principal, route, estimate)` checks every scope that applies (key, team, route)
and the key's and team's quotas in ONE backend call (one Redis round trip) and returns a
`Reservation` carrying the OpenAI `x-ratelimit-*` headers of the scope with the least left; it
raises `RateLimited` / `QuotaExceeded`. `reconcile()` settles the reservation with the real
tokens and cost, off the response path. A key with no limits anywhere costs nothing here.
Provider-account limits are checked per target by the dispatcher (`provider_gate`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from gateway.config.schema import Limits, Quota, TeamConfig
from gateway.errors import ServiceUnavailable, UpstreamRateLimited
from gateway.limits import LimitCheck, QuotaCheck
from gateway.limits.spec import ratelimit_headers
from gateway.metrics import REDIS_LATENCY, HeldHistogram
from gateway.types import Target

T = TypeVar("T")


@dataclass(slots=True)
class Reservation:
    headers: dict[str, str] = field(default_factory=dict)
    handle: Any = None  # the backend's own reservation, for reconcile


NO_LIMITS = Reservation()


def _limit(scope: str, ident: str, lim: Limits | None) -> LimitCheck | None:
    if lim is None or (lim.rpm is None and lim.tpm is None):
        return None
    return LimitCheck(scope, ident, lim.rpm, lim.tpm)


def _quota(scope: str, ident: str, q: Quota | None) -> QuotaCheck | None:
    if q is None or (q.tokens is None and q.usd is None):
        return None
    return QuotaCheck(scope, ident, q.tokens, q.usd, q.period)


_MEMO_MAX = 4096  # principals and routes whose checks are remembered (per config generation)


def _memo(table: dict[int, tuple[Any, Any]], obj: Any, build: Callable[[Any], T]) -> T:
    """`build(obj)`, remembered by the object's identity (at most `_MEMO_MAX` objects)."""
    hit = table.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]  # type: ignore[no-any-return]
    value = build(obj)
    if len(table) >= _MEMO_MAX:
        table.clear()
    table[id(obj)] = (obj, value)
    return value


class Limiter:
    """Builds each request's checks from the principal and the route. Both are immutable for a
    config generation (a dynamic key's `Principal` is rebuilt when its record changes), so their
    checks are built once and remembered by identity; a new `teams` mapping (a reload) forgets
    them."""

    def __init__(self, backend: Any, teams: Mapping[str, TeamConfig]) -> None:
        self.backend = backend
        self._teams = teams
        # id(obj) -> (obj, checks): the object is held, so its id cannot be reused meanwhile
        self._principals: dict[int, tuple[Any, Any]] = {}
        self._routes: dict[int, tuple[Any, Any]] = {}
        self.timed = getattr(backend, "name", "") != "memory"
        self._latency = HeldHistogram(REDIS_LATENCY)

    @property
    def teams(self) -> Mapping[str, TeamConfig]:
        return self._teams

    @teams.setter
    def teams(self, teams: Mapping[str, TeamConfig]) -> None:
        self._teams = teams
        self._principals.clear()
        self._routes.clear()

    def quota_checks(self, principal: Any) -> list[QuotaCheck]:
        out = [_quota("key", principal.key_id, principal.quota)]
        team = self._teams.get(principal.team) if principal.team else None
        if team is not None:
            out.append(_quota("team", principal.team, team.quota))
        return [q for q in out if q is not None]

    def _principal_checks(self, principal: Any) -> tuple[tuple[LimitCheck, ...], list[QuotaCheck]]:
        checks = [_limit("key", principal.key_id, principal.limits)]
        team = self._teams.get(principal.team) if principal.team else None
        if team is not None:
            checks.append(_limit("team", principal.team, team.limits))
        return tuple(c for c in checks if c is not None), self.quota_checks(principal)

    def _route_checks(self, route: Any) -> tuple[LimitCheck, ...]:
        check = _limit("model", route.id, route.limits)
        return (check,) if check is not None else ()

    async def acquire(self, principal: Any, route: Any, estimate: int) -> Reservation:
        active, quotas = _memo(self._principals, principal, self._principal_checks)
        by_route = _memo(self._routes, route, self._route_checks)
        if by_route:
            active = active + by_route
        if not active and not quotas:
            self._closed_check()
            return NO_LIMITS
        if self.timed:
            t0 = time.perf_counter()
            decision = await self.backend.acquire(active, estimate, quotas)
            self._latency.observe(time.perf_counter() - t0)
        else:
            decision = await self.backend.acquire(active, estimate, quotas)
        if not decision.ok:
            decision.raise_for_refusal()
        return Reservation(ratelimit_headers(decision) if active else {}, decision.reservation)

    def _closed_check(self) -> None:
        """`on_redis_error: closed` means closed for every key, not only for keys with limits:
        a key without limits skips the backend call, so ask the backend's state instead."""
        b = self.backend
        if getattr(b, "mode", None) == "closed" and not getattr(b, "up", True):
            raise ServiceUnavailable("rate-limit state store (Redis) is unavailable")

    def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Settle with the real usage; returns at once (the backend does it off the path)."""
        if reservation.handle is not None:
            self.backend.reconcile_soon(reservation.handle, tokens, cost_usd)

    def reconcile_handle(self, handle: Any, tokens: int) -> None:
        self.backend.reconcile_soon(handle, tokens, 0.0)

    async def provider_gate(self, target: Target, limits: Limits | None, estimate: int) -> Any:
        """Reserve the provider account's own rpm/tpm before calling it; refused: try another."""
        check = _limit("provider", target.provider.name, limits)
        if check is None:
            return None
        decision = await self.backend.acquire([check], estimate, ())
        if not decision.ok:
            raise UpstreamRateLimited(
                f"provider '{target.provider.name}' is at its configured rate limit "
                f"(providers.{target.provider.name}.limits)", provider=target.provider.name,
                retry_after_s=decision.retry_after_s)
        return decision.reservation


class NullLimiter:
    """Before the state resources start (and in unit tests of the pipeline): no limits."""

    async def acquire(self, principal: Any, route: Any, estimate: int) -> Reservation:
        return NO_LIMITS

    def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        return None
