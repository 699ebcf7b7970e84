"""Shared state resources for `create_app`: limits backend, key store, usage sink and store,
traces, and cooldowns shared through Redis. One `cleanup_ctx` entry; closing flushes usage.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

from gateway.accounting.jsonl import JsonlWriter
from gateway.accounting.memory_store import MemoryUsageStore
from gateway.accounting.sink import UsageSink
from gateway.accounting.traces import MemoryTraceStore
from gateway.auth import Principal, parse_expiry
from gateway.config.schema import GatewayConfig, Limits, Quota
from gateway.http.keys import RESOURCES, STATE
from gateway.limiting import Limiter
from gateway.limits import create_state
from gateway.metrics import REDIS_ERRORS, REDIS_UP, USAGE_DROPPED

log = logging.getLogger(__name__)
COOLDOWN_REFRESH_S = 0.5
WARM_CONNECTIONS = 8  # Redis connections opened at start, so a first burst pays no connects


class DynamicKeys:
    """Key store records → `Principal`s, converted once per record version."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[str, tuple[Any, Principal]] = {}

    async def principal(self, digest: str) -> Principal | None:
        rec = await self.store.lookup(digest)
        if rec is None or not rec.usable(time.time()):
            self._cache.pop(digest, None)
            return None
        hit = self._cache.get(digest)
        if hit is not None and hit[0] is rec:
            return hit[1]
        lim = rec.limits or {}
        q = rec.quota or None
        p = Principal(
            key_id=rec.id, team=rec.team or "",
            models=tuple(rec.models) if rec.models is not None else None,
            limits=Limits(lim.get("rpm"), lim.get("tpm")) if any(lim.values()) else None,
            quota=Quota(q.get("tokens"), q.get("usd"), q.get("period", "month")) if q else None,
            expires_at=parse_expiry(rec.expires_at), metadata=rec.metadata)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[digest] = (rec, p)
        return p


def _redis_client(state: Any) -> Any:
    primary = getattr(state.limits, "primary", None)
    return getattr(primary, "client", None)


async def state_resources(app: Any) -> AsyncIterator[None]:
    res = app[RESOURCES]
    appstate = app[STATE]
    cfg: GatewayConfig = appstate.cfg
    loop = asyncio.get_running_loop()

    def on_change(up: bool) -> None:
        appstate.redis_ok = up
        REDIS_UP.set(1 if up else 0)
        if not up:
            REDIS_ERRORS.inc()
        (log.info if up else log.error)(
            "redis is back: shared limits resume" if up else
            f"redis unreachable: on_redis_error={cfg.state.on_redis_error}"
            + (" (serving with per-process limits)" if cfg.state.on_redis_error == "open" else ""))

    state = create_state(cfg.state.redis_url or None, on_redis_error=cfg.state.on_redis_error,
                         budget_s=cfg.state.redis_budget_ms / 1000, on_state_change=on_change)
    await state.start()
    if cfg.state.redis_url:
        REDIS_UP.set(1 if state.redis_up else 0)
    res.state = state
    res.limits = Limiter(state.limits, cfg.teams)
    res.keystore = DynamicKeys(state.keys)
    client = _redis_client(state)
    if client is not None and state.redis_up:
        await _warm_pool(client)
    writers: list[Any] = []
    if client is not None:
        from gateway.accounting.redis_store import RedisUsageStore
        from gateway.accounting.traces import RedisTraceStore

        from gateway.limits.fastredis import FastRedis, fast_target

        target = fast_target(cfg.state.redis_url)
        res.usage_store = RedisUsageStore(client, stream_maxlen=cfg.usage.stream_maxlen,
                                          dedup_ttl_s=cfg.usage.dedup_window_s,
                                          fast=FastRedis(target) if target else None)
        res.traces = RedisTraceStore(client)
    else:
        res.usage_store = MemoryUsageStore()
        res.traces = MemoryTraceStore(max_entries=cfg.traces.max_entries)
    writers.append(res.usage_store)
    if cfg.usage.jsonl_path:
        writers.append(JsonlWriter(cfg.usage.jsonl_path))
    res.sink = UsageSink(writers, max_buffer=cfg.usage.buffer, on_drop=USAGE_DROPPED.inc)
    await res.sink.start()
    appstate.rebuild()  # the services of this generation now see the state resources
    tasks = []
    if client is not None:
        res.balancer.on_trip = lambda key, s: loop.create_task(_trip(state, key, s))
        tasks.append(loop.create_task(_refresh_cooldowns(state, res)))
    yield
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if res.recorder is not None:
        await res.recorder.drain()
    # bounded: a down store must not stretch shutdown past the pod's termination period
    await res.sink.close(timeout_s=min(5.0, cfg.server.shutdown_grace_s))
    await res.traces.close()
    await state.close()


async def _warm_pool(client: Any) -> None:
    """Open a few pooled connections before the first request: a cold burst would otherwise
    connect (TCP + handshake) inside the per-call Redis budget, overrun it, and switch this
    replica to per-process limits (on_redis_error: open) for a probe interval."""
    try:
        async with asyncio.timeout(2.0):
            await asyncio.gather(*(client.ping() for _ in range(WARM_CONNECTIONS)))
    except Exception:  # best effort: the failover backend handles a Redis that is not there
        log.warning("could not pre-open redis connections")


async def _trip(state: Any, key: str, seconds: float) -> None:
    try:
        await state.limits.trip(key, seconds)
    except Exception:  # sharing a cooldown is best effort; the local breaker still holds
        log.warning("could not share a cooldown through redis", extra={"target": key})


async def _refresh_cooldowns(state: Any, res: Any) -> None:
    """Every replica learns of trips made elsewhere within half a second, with no Redis call
    on the request path."""
    while True:
        try:
            cooled = await state.limits.cooled()
            res.balancer.shared_until = {k: until for k, until in cooled.items()}
        except Exception:
            pass
        await asyncio.sleep(COOLDOWN_REFRESH_S)
