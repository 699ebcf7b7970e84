"""The one interface both state backends (Redis, in-process) implement."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from gateway.limits.spec import Decision, LimitCheck, QuotaCheck, QuotaUsage, Reservation


@runtime_checkable
class StateBackend(Protocol):
    """Rate limits, quotas and cooldowns. Every method is safe to call concurrently."""

    name: str  # "memory" | "redis" | "failover"

    async def start(self) -> None:
        """Connect and load scripts. Idempotent."""

    async def close(self) -> None:
        """Wait for pending background reconciles, then release connections."""

    async def acquire(
        self, checks: Sequence[LimitCheck], estimate_tokens: int,
        quotas: Sequence[QuotaCheck] = (),
    ) -> Decision:
        """Check and consume every scope and quota atomically (all or nothing)."""

    async def reconcile(
        self, reservation: Reservation, actual_tokens: int, cost_usd: float = 0.0,
    ) -> None:
        """Settle a reservation with the real usage (tokens and USD). Once per reservation."""

    async def release(self, reservation: Reservation) -> None:
        """Undo a reservation entirely (the request never reached an upstream)."""

    async def usage(self, quotas: Sequence[QuotaCheck]) -> list[QuotaUsage]:
        """Current-period usage of each quota (GET /v1/key)."""

    async def trip(self, target_key: str, seconds: float) -> None:
        """Cool `target_key` down for `seconds` (keeps the later end if already cooling)."""

    async def cooled(self) -> dict[str, float]:
        """Targets cooling down now → until (unix seconds in this process's clock)."""

    async def clear(self, target_key: str) -> None:
        """End a cooldown early."""

    def reconcile_soon(
        self, reservation: Reservation, actual_tokens: int, cost_usd: float = 0.0,
    ) -> None:
        """`reconcile` off the response path: returns at once; `close()` waits for it."""
