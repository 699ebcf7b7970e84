"""Target health and load balancing: cooldowns (a circuit breaker per target), in-flight counts and
an EWMA of latency, and the order in which a route's targets are tried.

A target that fails `cooldown.failures` times within `cooldown.window_s`, or answers 429, leaves
rotation for `cooldown.cooldown_s` (or the upstream's Retry-After, if longer). When the cool-down
ends it is half-open: one probe request goes through while the others skip it; success closes the
breaker, failure opens it again. With Redis, trips are shared (see `SharedCooldowns`), so every
replica stops sending to a dead account.
"""
from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gateway.config.schema import Cooldown
from gateway.types import Target

_EWMA_ALPHA = 0.3


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False
    inflight: int = 0
    ewma_s: float = 0.0


class Balancer:
    def __init__(self, cooldown: Cooldown, clock: Callable[[], float] = time.monotonic,
                 on_trip: Callable[[str, float], None] | None = None) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.on_trip = on_trip  # called with (target key, seconds): shares the trip via Redis
        self._states: dict[str, _State] = {}
        self.shared_until: dict[str, float] = {}  # target key -> wall-clock end, from Redis

    def _state(self, key: str) -> _State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State()
        return st

    # ------------------------------------------------------------ health
    def available(self, target: Target) -> bool:
        """In rotation: closed, or half-open with no probe in flight (the caller becomes the probe)."""
        st = self._state(target.key)
        now = self.clock()
        shared = self.shared_until.get(target.key, 0.0)
        if shared > time.time():
            return False
        if st.open_until == 0.0:
            return True
        return now >= st.open_until and not st.probing  # half-open: one probe at a time

    def success(self, target: Target, latency_s: float) -> None:
        st = self._state(target.key)
        st.failures.clear()
        st.open_until = 0.0
        st.probing = False
        st.ewma_s = latency_s if st.ewma_s == 0.0 else (
            _EWMA_ALPHA * latency_s + (1 - _EWMA_ALPHA) * st.ewma_s)

    def failure(self, target: Target, *, rate_limited: bool = False,
                retry_after_s: float | None = None) -> None:
        st = self._state(target.key)
        now = self.clock()
        c = self.cooldown
        st.failures.append(now)
        while st.failures and st.failures[0] < now - c.window_s:
            st.failures.popleft()
        if rate_limited or st.probing or len(st.failures) >= c.failures:
            seconds = max(c.cooldown_s, retry_after_s or 0.0)
            st.open_until = now + seconds
            st.probing = False
            st.failures.clear()
            if self.on_trip is not None:
                self.on_trip(target.key, seconds)

    def release_probe(self, target: Target) -> None:
        """A probe that ended without a verdict (e.g. the client left) frees the half-open slot."""
        self._state(target.key).probing = False

    def is_up(self, target: Target) -> bool:
        st = self._states.get(target.key)
        return (st is None or self.clock() >= st.open_until) and \
            self.shared_until.get(target.key, 0.0) <= time.time()

    # ------------------------------------------------------------ load
    def begin(self, target: Target) -> None:
        """An attempt starts; on a half-open target it becomes the single probe."""
        st = self._state(target.key)
        st.inflight += 1
        if st.open_until:
            st.probing = True

    def end(self, target: Target) -> None:
        st = self._state(target.key)
        st.inflight -= 1

    def order(self, targets: Iterable[Target], strategy: str) -> list[Target]:
        """The route's targets in the order to try them (cooled-down ones excluded)."""
        pool = [t for t in targets if self.available(t)]
        if len(pool) <= 1:
            return pool
        if strategy == "least_inflight":
            return sorted(pool, key=lambda t: (self._state(t.key).inflight, random.random()))
        if strategy == "latency":
            # untried targets first (ewma 0), so every target gets measured
            return sorted(pool, key=lambda t: (self._state(t.key).ewma_s, random.random()))
        return _weighted_order(pool)


def _weighted_order(pool: list[Target]) -> list[Target]:
    """Weighted random without replacement: the first pick follows the weights, then the rest."""
    out: list[Target] = []
    remaining = list(pool)
    while remaining:
        total = sum(t.weight for t in remaining)
        r = random.random() * total
        for i, t in enumerate(remaining):
            r -= t.weight
            if r <= 0 or i == len(remaining) - 1:
                out.append(remaining.pop(i))
                break
    return out
