"""Redis with a time budget and a policy for when it is down or slow.

Every Redis call on the request path gets `budget_s` (default 50 ms). A call that errors or
overruns marks Redis down at once, then:

* `on_redis_error="open"`: requests are counted by the in-process backend (limits become
  per replica) and `Decision.degraded` is True;
* `on_redis_error="closed"`: `gateway.errors.ServiceUnavailable` (503).

While down, a background probe PINGs Redis every `probe_interval_s`; the first answer
switches back. `on_state_change(up)` is called on each switch (emit the metric and the log
line there); `down_since` and `last_outage` give the outage window. Reservations are settled
by the backend that made them; settling a Redis reservation while Redis is down drops it
(those few tokens are not reconciled).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Sequence, TypeVar

from redis.exceptions import RedisError

from gateway.errors import ServiceUnavailable
from gateway.limits.background import BackgroundTasks
from gateway.limits.memory import MemoryBackend
from gateway.limits.redis_backend import RedisBackend
from gateway.limits.spec import Decision, LimitCheck, QuotaCheck, QuotaUsage, Reservation

log = logging.getLogger(__name__)
T = TypeVar("T")
StateCallback = Callable[[bool], None]
_REDIS_TROUBLE = (RedisError, OSError, asyncio.TimeoutError)
SLOW_LIMIT = 3  # consecutive over-budget calls that mark Redis down


class RedisDown(Exception):
    """Internal: Redis is marked down (or just failed)."""


class FailoverBackend:
    """`StateBackend` over Redis with an in-process fallback; see the module docstring."""

    name = "failover"

    def __init__(self, primary: RedisBackend, fallback: MemoryBackend | None = None, *,
                 on_redis_error: str = "open", budget_s: float = 0.05,
                 probe_interval_s: float = 0.5, settle_budget_s: float = 2.0,
                 on_state_change: StateCallback | None = None) -> None:
        if on_redis_error not in ("open", "closed"):
            raise ValueError("on_redis_error must be 'open' or 'closed'")
        self.primary = primary
        self.fallback = fallback or MemoryBackend()
        self.mode = on_redis_error
        self.budget_s = budget_s
        self.probe_interval_s = probe_interval_s
        self.settle_budget_s = settle_budget_s
        self.on_state_change = on_state_change
        self.up = True
        self.down_since: float | None = None
        self.last_outage: tuple[float, float] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._bg = BackgroundTasks()
        self._slow = 0  # consecutive calls over budget

    # ------------------------------------------------------------------ state

    def _mark_down(self, err: BaseException) -> None:
        if not self.up:
            return
        self.up, self.down_since = False, time.time()
        # the error's own text says why (refused, TLS verification, auth); redis-py's messages
        # name the host and port, never the password
        log.warning("redis unavailable (%s); limits %s; %s", type(err).__name__,
                    "per replica in-process" if self.mode == "open" else "refuse with 503",
                    str(err)[:300] or "no detail")
        self._notify(False)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    def _mark_up(self) -> None:
        if self.up:
            return
        end = time.time()
        self.last_outage = (self.down_since or end, end)
        self.up, self.down_since = True, None
        log.warning("redis reachable again after %.1f s", end - self.last_outage[0])
        self._notify(True)

    def _notify(self, up: bool) -> None:
        if self.on_state_change is not None:
            try:
                self.on_state_change(up)
            except Exception:  # a metrics hook must not break limits
                log.exception("on_state_change callback failed")

    async def probe(self) -> bool:
        """PING Redis once; switch back to it when it answers. Returns whether it is up."""
        try:
            async with asyncio.timeout(max(self.budget_s, 1.0)):
                await self.primary.ping()
        except _REDIS_TROUBLE:
            return False
        self._mark_up()
        return True

    async def _probe_loop(self) -> None:
        while not self.up:
            await asyncio.sleep(self.probe_interval_s)
            await self.probe()

    async def _redis(self, call: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        if not self.up:
            raise RedisDown()
        try:
            async with asyncio.timeout(budget or self.budget_s):
                result = await call()
        except _REDIS_TROUBLE as err:
            raise self._trouble(err) from err
        self._slow = 0
        return result

    def _trouble(self, err: BaseException) -> RedisDown:
        """Count a failed call: the `RedisDown` to raise."""
        if isinstance(err, asyncio.TimeoutError):
            # one slow answer (a busy event loop, a GC pause) serves this request from the
            # fallback; only SLOW_LIMIT in a row mean Redis is down
            self._slow += 1
            if self._slow >= SLOW_LIMIT:
                self._mark_down(err)
        else:
            self._mark_down(err)
        return RedisDown()

    def _refuse(self) -> ServiceUnavailable:
        return ServiceUnavailable("rate-limit state store (Redis) is unavailable")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect; a Redis that is down at start-up starts the backend degraded (no raise)."""
        try:
            async with asyncio.timeout(max(self.budget_s, 2.0)):
                await self.primary.start()
        except _REDIS_TROUBLE as err:
            self._mark_down(err)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._bg.drain()
        await self.primary.close()

    # ------------------------------------------------------------------ limits

    async def acquire(self, checks: Sequence[LimitCheck], estimate_tokens: int,
                      quotas: Sequence[QuotaCheck] = ()) -> Decision:
        primary = self.primary
        try:
            if not primary.bounds_itself:
                return await self._redis(lambda: primary.acquire(checks, estimate_tokens, quotas))
            # the pipelined connection's watchdog holds the budget; `_redis` inlined (the
            # hot path: one coroutine less per request)
            if not self.up:
                raise RedisDown()
            try:
                decision = await primary.acquire(checks, estimate_tokens, quotas,
                                                 timeout_s=self.budget_s)
            except _REDIS_TROUBLE as err:
                raise self._trouble(err) from err
            self._slow = 0
            return decision
        except RedisDown:
            if self.mode == "closed":
                raise self._refuse() from None
        decision = self.fallback.acquire_now(checks, estimate_tokens, quotas)
        decision.degraded = True
        return decision

    async def reconcile(self, reservation: Reservation, actual_tokens: int,
                        cost_usd: float = 0.0) -> None:
        if reservation.origin == self.fallback.name:
            self.fallback.reconcile_soon(reservation, actual_tokens, cost_usd)
            return
        try:
            await self._redis(lambda: self.primary.reconcile(reservation, actual_tokens, cost_usd),
                              self.settle_budget_s)
        except RedisDown:
            log.info("reconcile dropped: redis unavailable")

    def reconcile_soon(self, reservation: Reservation, actual_tokens: int,
                       cost_usd: float = 0.0) -> None:
        if reservation.origin == self.fallback.name:
            self.fallback.reconcile_soon(reservation, actual_tokens, cost_usd)
        elif self.up:
            self.primary.reconcile_soon(reservation, actual_tokens, cost_usd)  # pipelined
        else:
            log.info("reconcile dropped: redis unavailable")

    async def release(self, reservation: Reservation) -> None:
        if reservation.origin == self.fallback.name:
            await self.fallback.release(reservation)
            return
        try:
            await self._redis(lambda: self.primary.release(reservation), self.settle_budget_s)
        except RedisDown:
            log.info("release dropped: redis unavailable")

    async def usage(self, quotas: Sequence[QuotaCheck]) -> list[QuotaUsage]:
        try:
            return await self._redis(lambda: self.primary.usage(quotas), self.settle_budget_s)
        except RedisDown:
            if self.mode == "closed":
                raise self._refuse() from None
            return await self.fallback.usage(quotas)

    # ------------------------------------------------------------------ cooldowns

    async def trip(self, target_key: str, seconds: float) -> None:
        try:
            await self._redis(lambda: self.primary.trip(target_key, seconds))
        except RedisDown:  # kept locally (this replica only) until it ends
            await self.fallback.trip(target_key, seconds)

    async def cooled(self) -> dict[str, float]:
        local = await self.fallback.cooled()
        try:
            shared = await self._redis(self.primary.cooled)
        except RedisDown:
            return local
        for k, until in local.items():
            shared[k] = max(until, shared.get(k, 0.0))
        return shared

    async def clear(self, target_key: str) -> None:
        await self.fallback.clear(target_key)
        try:
            await self._redis(lambda: self.primary.clear(target_key))
        except RedisDown:
            pass
