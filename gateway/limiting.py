"""The pipeline's view of limits and quotas: reserve before the call, reconcile after.

`Limiter.acquire(principal, route, estimate)` checks every scope that applies (key, team, route)
in one backend call and returns a `Reservation` carrying the OpenAI `x-ratelimit-*` headers of the
scope with the least left; it raises `RateLimited` / `QuotaExceeded`. `reconcile()` runs off the
response path with the real tokens and cost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Reservation:
    headers: dict[str, str] = field(default_factory=dict)
    handle: Any = None  # the backend's own reservation, for reconcile


NO_LIMITS = Reservation()


class NullLimiter:
    """No limits configured anywhere: nothing to check, nothing to reconcile."""

    async def acquire(self, principal: Any, route: Any, estimate: int) -> Reservation:
        return NO_LIMITS

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        return None
