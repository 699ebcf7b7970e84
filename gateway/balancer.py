"""Target health and load balancing: cooldowns (a circuit breaker per target), in-flight counts and
an EWMA of latency, and the order in which a route's targets are tried.

A target that fails `cooldown.failures` times within `cooldown.window_s`, or answers 429, leaves
rotation: for the upstream's Retry-After after a 429 that carries one, else for
`cooldown.cooldown_s` (or a longer Retry-After). When the cool-down ends it is half-open: one probe
request goes through while the others skip it; success closes the breaker, failure opens it
again. A trip is reported through `on_trip(target key, seconds)`, and trips made by other replicas
arrive in `shared_until` (target key -> wall-clock end), both for the Redis state backend.

Cheap on the hot path: a healthy target costs one dict lookup per check and no allocation.
"""
from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gateway.config.schema import Cooldown
from gateway.types import Target

_EWMA_ALPHA = 0.3
_FAILURE_PENALTY_S = 1.0  # a failed attempt counts as at least this slow for `latency`


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0  # 0: closed; else the breaker is open (then half-open) until then
    probing: bool = False  # half-open and its single probe is in flight
    rate_limited: bool = False  # the last trip came from a 429
    inflight: int = 0
    ewma_s: float = 0.0


class Balancer:
    def __init__(self, cooldown: Cooldown, clock: Callable[[], float] = time.monotonic,
                 on_trip: Callable[[str, float], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.on_trip = on_trip  # called with (target key, seconds): shares the trip via Redis
        self.rng = rng or random.Random()
        self._states: dict[str, _State] = {}
        self.shared_until: dict[str, float] = {}  # target key -> wall-clock end, from Redis

    def _state(self, key: str) -> _State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State()
        return st

    # ------------------------------------------------------------ health
    def available(self, target: Target, owner: bool = False) -> bool:
        """In rotation: closed, or half-open with no probe in flight (the caller becomes the probe).

        `owner`: the caller's own failure tripped the breaker; its retries may go on (as the
        probe) during the cool-down, while other requests skip the target."""
        key = target.key
        st = self._states.get(key)
        if st is not None and st.open_until and (
                st.probing or (not owner and self.clock() < st.open_until)):
            return False
        return not self.shared_until or self.shared_until.get(key, 0.0) <= time.time()

    def wait_s(self, target: Target) -> float:
        """Seconds until the target is back in rotation (0 when it is; inf while a probe runs)."""
        key = target.key
        st = self._states.get(key)
        wait = 0.0
        if st is not None and st.open_until:
            if st.probing:
                return math.inf
            wait = max(0.0, st.open_until - self.clock())
        if self.shared_until:
            wait = max(wait, self.shared_until.get(key, 0.0) - time.time())
        return wait

    def rate_limited(self, target: Target) -> bool:
        """Is the target out of rotation because it answered 429?"""
        st = self._states.get(target.key)
        return st is not None and st.open_until != 0.0 and st.rate_limited

    def is_up(self, target: Target) -> bool:
        """For `provider_up`: not inside a cool-down (half-open counts as up)."""
        key = target.key
        st = self._states.get(key)
        return (st is None or self.clock() >= st.open_until) and \
            self.shared_until.get(key, 0.0) <= time.time()

    # ------------------------------------------------------------ verdicts
    def begin(self, target: Target) -> bool:
        """An attempt starts (call `available()` first, with no await between). Returns whether
        it is the half-open target's single probe."""
        st = self._state(target.key)
        st.inflight += 1
        if st.open_until:
            st.probing = True
            return True
        return False

    def end(self, target: Target) -> None:
        self._state(target.key).inflight -= 1

    def success(self, target: Target, latency_s: float | None, *, probe: bool = True) -> None:
        """The target answered (latency None: it answered, but not a success worth timing, such as
        a 400 for the request itself). `probe=False` from an attempt that began before the breaker
        opened: it does not close the breaker, only the probe's verdict does."""
        st = self._state(target.key)
        if st.failures:
            st.failures.clear()
        if probe or not st.open_until:
            st.open_until = 0.0
            st.probing = False
        if latency_s is not None:
            st.ewma_s = latency_s if st.ewma_s == 0.0 else (
                _EWMA_ALPHA * latency_s + (1 - _EWMA_ALPHA) * st.ewma_s)

    def failure(self, target: Target, *, rate_limited: bool = False,
                retry_after_s: float | None = None, probe: bool = False,
                duration_s: float = 0.0) -> bool:
        """Count a failure; returns whether it took the target out of rotation."""
        st = self._state(target.key)
        now = self.clock()
        c = self.cooldown
        penalty = max(duration_s, 2 * st.ewma_s, _FAILURE_PENALTY_S)
        st.ewma_s = _EWMA_ALPHA * penalty + (1 - _EWMA_ALPHA) * st.ewma_s
        if probe:
            st.probing = False
        st.failures.append(now)
        while st.failures and st.failures[0] < now - c.window_s:
            st.failures.popleft()
        if rate_limited or probe or len(st.failures) >= c.failures:
            if rate_limited and retry_after_s is not None:
                seconds = retry_after_s  # the provider said when it will take requests again
            else:
                seconds = max(c.cooldown_s, retry_after_s or 0.0)
            st.open_until = max(st.open_until, now + seconds)
            st.rate_limited = rate_limited
            st.failures.clear()
            if self.on_trip is not None:
                self.on_trip(target.key, seconds)
            return True
        return False

    def release_probe(self, target: Target, probe: bool = True) -> None:
        """An attempt ended without a verdict (the client left): free the half-open slot if it
        held it."""
        if probe:
            st = self._states.get(target.key)
            if st is not None:
                st.probing = False

    # ------------------------------------------------------------ load
    def order(self, targets: Iterable[Target], strategy: str) -> list[Target]:
        """The route's targets in the order to try them (cooled-down ones excluded)."""
        pool = [t for t in targets if self.available(t)]
        if len(pool) <= 1:
            return pool
        rnd = self.rng.random
        if strategy == "least_inflight":
            return sorted(pool, key=lambda t: (self._inflight(t), rnd()))
        if strategy == "latency":
            # untried targets first (ewma 0), so every target gets measured; failures add a penalty
            return sorted(pool, key=lambda t: (self._ewma(t), rnd()))
        return self._weighted(pool)

    def _inflight(self, t: Target) -> int:
        st = self._states.get(t.key)
        return st.inflight if st is not None else 0

    def _ewma(self, t: Target) -> float:
        st = self._states.get(t.key)
        return st.ewma_s if st is not None else 0.0

    def ewma_s(self, target: Target) -> float:
        return self._ewma(target)

    def inflight(self, target: Target) -> int:
        return self._inflight(target)

    def _weighted(self, pool: list[Target]) -> list[Target]:
        """Weighted random without replacement: the first pick follows the weights, then the
        rest."""
        out: list[Target] = []
        total = sum(t.weight for t in pool)
        while pool:
            r = self.rng.random() * total
            last = len(pool) - 1
            for i, t in enumerate(pool):
                r -= t.weight
                if r < 0 or i == last:
                    out.append(pool.pop(i))
                    total -= t.weight
                    break
        return out
