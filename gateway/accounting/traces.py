"""Traces of requests sent with `observability: true`, readable by the key that sent them.

A trace is stored under (key id, request id): another key asking for the same request id sees
nothing (request ids may come from clients, so two keys may even use the same one).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Protocol

from gateway.types import dumps, loads

if TYPE_CHECKING:
    from gateway.accounting.redis_store import RedisClient

log = logging.getLogger(__name__)

Trace = dict[str, Any]


class TraceStore(Protocol):
    async def put(self, request_id: str, key_id: str, trace: Trace, ttl_s: float) -> None: ...

    async def get(self, request_id: str, key_id: str) -> Trace | None: ...

    async def close(self) -> None: ...


class MemoryTraceStore:
    """Bounded (oldest evicted past `max_entries`) and expiring; `clock` is injectable."""

    def __init__(self, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self.max_entries = max_entries
        self.clock = clock

    def _expire(self, now: float) -> None:
        # entries are kept in insertion order; expiry times differ by ttl, so sweep a few
        for ident in list(islice(self._items, 64)):
            if self._items[ident][0] <= now:
                del self._items[ident]

    async def put(self, request_id: str, key_id: str, trace: Trace, ttl_s: float) -> None:
        now = self.clock()
        self._expire(now)
        ident = (key_id, request_id)
        self._items.pop(ident, None)
        self._items[ident] = (now + ttl_s, dumps(trace))
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def get(self, request_id: str, key_id: str) -> Trace | None:
        item = self._items.get((key_id, request_id))
        if item is None:
            return None
        expires, raw = item
        if expires <= self.clock():
            del self._items[(key_id, request_id)]
            return None
        result: Trace = loads(raw)
        return result

    def __len__(self) -> int:
        return len(self._items)

    async def close(self) -> None:
        self._items.clear()


class RedisTraceStore:
    """`SET <prefix>:<key id>:<request id> <json> EX ttl`; `redis` is a URL or a client."""

    def __init__(self, redis: "str | RedisClient", *, prefix: str = "modelyard:trace") -> None:
        from gateway.accounting.redis_store import redis_client

        self._owned = isinstance(redis, str)
        self.redis: "RedisClient" = redis_client(redis) if isinstance(redis, str) else redis
        self.prefix = prefix

    def _key(self, request_id: str, key_id: str) -> str:
        return f"{self.prefix}:{key_id}:{request_id}"

    async def put(self, request_id: str, key_id: str, trace: Trace, ttl_s: float) -> None:
        await self.redis.set(self._key(request_id, key_id), dumps(trace),
                             px=max(1, int(ttl_s * 1000)))

    async def get(self, request_id: str, key_id: str) -> Trace | None:
        raw = await self.redis.get(self._key(request_id, key_id))
        if raw is None:
            return None
        result: Trace = loads(raw)
        return result

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()
