"""Rate limits, quotas, dynamic keys and shared cooldowns, in Redis or in-process.

    state = create_state(redis_url, on_redis_error="open", budget_s=0.05,
                         on_state_change=lambda up: ...)
    await state.start()
    decision = await state.limits.acquire(checks, estimate_tokens, quotas)
    decision.raise_for_refusal()            # 429 rate_limit_exceeded / insufficient_quota
    headers = decision.headers()            # x-ratelimit-* (OpenAI duration form)
    ...call upstream...
    state.limits.reconcile_soon(decision.reservation, actual_tokens, cost_usd)
    await state.close()

The algorithm is documented in `gateway.limits.spec`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gateway.limits.backend import StateBackend
from gateway.limits.durations import format_duration, parse_duration
from gateway.limits.keyrecord import KeyRecord, digest_of, new_secret
from gateway.limits.keystore import MemoryKeyStore, RedisKeyStore
from gateway.limits.memory import MemoryBackend
from gateway.limits.spec import (
    Decision, LimitCheck, QuotaCheck, QuotaUsage, Reservation, Window, ratelimit_headers,
)

KeyStore = MemoryKeyStore | RedisKeyStore

_LAZY = {"FailoverBackend": "gateway.limits.failover", "RedisBackend": "gateway.limits.redis_backend"}


def __getattr__(name: str) -> Any:
    """Redis-backed classes load redis-py (~120 ms) only when Redis is configured."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


@dataclass(slots=True)
class State:
    """The state layer of one process: limits/quotas/cooldowns plus the dynamic key store."""

    limits: StateBackend
    keys: KeyStore

    @property
    def redis_up(self) -> bool:
        """False while a Redis backend is down (always True for the in-process backend)."""
        return getattr(self.limits, "up", True)

    async def start(self) -> None:
        await self.limits.start()
        await self.keys.start()

    async def close(self) -> None:
        await self.keys.close()
        await self.limits.close()


def create_state(redis_url: str | None, *, on_redis_error: str = "open",
                 budget_s: float = 0.05, prefix: str = "my",
                 on_state_change: Callable[[bool], None] | None = None,
                 key_cache_ttl_s: float = 0.9) -> State:
    """In-process state when `redis_url` is empty, else Redis behind a `FailoverBackend`.

    URL forms: `redis://`, `rediss://` (TLS), and Redis Cluster as `redis+cluster://` /
    `rediss+cluster://` or `?cluster=1`. No I/O here: call `await state.start()`.
    """
    if not redis_url:
        return State(MemoryBackend(), MemoryKeyStore())
    from gateway.limits.failover import FailoverBackend
    from gateway.limits.redis_backend import RedisBackend

    primary = RedisBackend.from_url(redis_url, prefix=prefix)
    backend = FailoverBackend(primary, MemoryBackend(), on_redis_error=on_redis_error,
                              budget_s=budget_s, on_state_change=on_state_change)
    keys = RedisKeyStore(primary.client, prefix=prefix, cache_ttl_s=key_cache_ttl_s)
    return State(backend, keys)


__all__ = [
    "Decision", "FailoverBackend", "KeyRecord", "KeyStore", "LimitCheck", "MemoryBackend",
    "MemoryKeyStore", "QuotaCheck", "QuotaUsage", "RedisBackend", "RedisKeyStore", "Reservation",
    "State", "StateBackend", "Window", "create_state", "digest_of", "format_duration",
    "new_secret", "parse_duration", "ratelimit_headers",
]
