"""Dynamic API keys: an in-process store and a Redis store with one API.

Redis layout (one hash slot, `{keys}`, so it works on a cluster):
  `<prefix>:{keys}:d`  hash  SHA-256 digest → key record JSON
  `<prefix>:{keys}:i`  hash  key id → digest
`lookup(digest)` is the hot path: the Redis store answers from a per-process cache whose
entries live `cache_ttl_s` (default 0.9 s, unknown digests included), so a revoked, expired,
patched or deleted key is seen by every replica within one second, and a cached key costs no
Redis call. A lookup that misses the cache and finds Redis down answers from the stale entry
if there is one, else raises ServiceUnavailable.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.limits.keyrecord import KeyRecord, new_record, validate_changes

log = logging.getLogger(__name__)
Clock = Callable[[], float]
if TYPE_CHECKING:
    from gateway.limits.connection import RedisClient


def _trouble() -> tuple[type[BaseException], ...]:
    """What a Redis call may raise (redis-py loads only when Redis is configured)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


class _KeyStoreBase:
    """create/patch/revoke logic over four storage primitives the subclasses provide."""

    def __init__(self, clock: Clock | None) -> None:
        self._clock: Clock = clock or time.time

    async def _insert(self, rec: KeyRecord) -> bool:
        raise NotImplementedError

    async def _save(self, rec: KeyRecord) -> None:
        raise NotImplementedError

    async def get(self, key_id: str) -> KeyRecord | None:
        raise NotImplementedError

    async def delete(self, key_id: str) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, body: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        """Validate and store a new key → (record, secret). The secret is not kept anywhere."""
        rec, secret = new_record(body, self._clock())
        if not await self._insert(rec):
            raise InvalidRequest(f"a key with id {rec.id!r} already exists", param="id",
                                 code="duplicate_key_id")
        return rec, secret

    async def _require(self, key_id: str) -> KeyRecord:
        rec = await self.get(key_id)
        if rec is None:
            raise NotFound(f"no key with id {key_id!r}")
        return rec

    async def patch(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        """Change team, models, limits, quota, expires_at, metadata (NotFound, InvalidRequest)."""
        fields = validate_changes(changes)
        rec = await self._require(key_id)
        for name, value in fields.items():
            setattr(rec, name, value)
        await self._save(rec)
        return rec

    async def revoke(self, key_id: str) -> KeyRecord:
        """Mark revoked (kept for the record; `lookup` refuses it)."""
        rec = await self._require(key_id)
        rec.revoked = True
        await self._save(rec)
        return rec


class MemoryKeyStore(_KeyStoreBase):
    """Keys in this process only (no Redis configured)."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._by_digest: dict[str, KeyRecord] = {}
        self._by_id: dict[str, str] = {}

    async def _insert(self, rec: KeyRecord) -> bool:
        if rec.id in self._by_id:
            return False
        self._by_id[rec.id] = rec.digest
        self._by_digest[rec.digest] = KeyRecord.from_json(rec.to_json())
        return True

    async def _save(self, rec: KeyRecord) -> None:
        self._by_digest[rec.digest] = KeyRecord.from_json(rec.to_json())

    async def get(self, key_id: str) -> KeyRecord | None:
        digest = self._by_id.get(key_id)
        rec = self._by_digest.get(digest) if digest else None
        return KeyRecord.from_json(rec.to_json()) if rec else None

    async def list(self) -> list[KeyRecord]:
        return sorted((KeyRecord.from_json(r.to_json()) for r in self._by_digest.values()),
                      key=lambda r: (r.created_at, r.id))

    async def delete(self, key_id: str) -> bool:
        digest = self._by_id.pop(key_id, None)
        return digest is not None and self._by_digest.pop(digest, None) is not None

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The usable key (not revoked, not expired) with this digest, else None."""
        rec = self._by_digest.get(digest)
        return rec if rec is not None and rec.usable(self._clock()) else None


class RedisKeyStore(_KeyStoreBase):
    """Keys in Redis, shared by every replica; lookups cached per process (`cache_ttl_s`)."""

    def __init__(self, client: "RedisClient", *, prefix: str = "my", cache_ttl_s: float = 0.9,
                 budget_s: float = 0.25, max_cached: int = 10_000,
                 clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.client = client
        self._d = f"{prefix}:{{keys}}:d"
        self._i = f"{prefix}:{{keys}}:i"
        self.cache_ttl_s = cache_ttl_s
        self.budget_s = budget_s
        self.max_cached = max_cached
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    async def _call(self, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self.budget_s):
                return await coro
        except _trouble() as err:
            raise ServiceUnavailable("key store (Redis) is unavailable") from err

    async def _insert(self, rec: KeyRecord) -> bool:
        if not await self._call(self.client.hsetnx(self._i, rec.id, rec.digest)):
            return False
        await self._save(rec)
        return True

    async def _save(self, rec: KeyRecord) -> None:
        await self._call(self.client.hset(self._d, rec.digest, rec.to_json()))
        self._cache.pop(rec.digest, None)

    async def get(self, key_id: str) -> KeyRecord | None:
        digest = await self._call(self.client.hget(self._i, key_id))
        if digest is None:
            return None
        raw = await self._call(self.client.hget(self._d, digest))
        return KeyRecord.from_json(raw) if raw else None

    async def list(self) -> list[KeyRecord]:
        rows = await self._call(self.client.hgetall(self._d))
        return sorted((KeyRecord.from_json(v) for v in rows.values()),
                      key=lambda r: (r.created_at, r.id))

    async def delete(self, key_id: str) -> bool:
        digest = await self._call(self.client.hget(self._i, key_id))
        if digest is None:
            return False
        await self._call(self.client.hdel(self._d, digest))
        await self._call(self.client.hdel(self._i, key_id))
        self._cache.pop(digest.decode() if isinstance(digest, bytes) else digest, None)
        return True

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The usable key with this digest, else None; no Redis call while cached."""
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            rec = hit[1]
        else:
            try:
                async with asyncio.timeout(self.budget_s):
                    raw = await self.client.hget(self._d, digest)
            except _trouble() as err:
                if hit is None:
                    raise ServiceUnavailable("key store (Redis) is unavailable") from err
                log.warning("key store unavailable; using a cached key record")
                return hit[1] if hit[1] is not None and hit[1].usable(now) else None
            rec = KeyRecord.from_json(raw) if raw else None
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_ttl_s, rec)
        return rec if rec is not None and rec.usable(now) else None
