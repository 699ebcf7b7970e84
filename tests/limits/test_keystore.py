"""Dynamic keys: the same CRUD suite on both stores, and cross-replica visibility in Redis."""
from __future__ import annotations

from typing import AsyncIterator

import pytest

from gateway.errors import InvalidRequest, NotFound
from gateway.limits.keyrecord import digest_of
from gateway.limits.keystore import MemoryKeyStore, RedisKeyStore
from gateway.limits.redis_backend import RedisBackend
from tests.limits.conftest import FakeClock

Store = MemoryKeyStore | RedisKeyStore


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryKeyStore(clock=clock)
        return
    b = RedisBackend.from_url(request.getfixturevalue("redis_url"))
    yield RedisKeyStore(b.client, clock=clock)
    await b.close()


BODY = {"id": "search-prod", "team": "search", "models": ["openai/*"],
        "limits": {"rpm": 600, "tpm": 200000},
        "quota": {"tokens": 5000, "usd": 5, "period": "month"},
        "expires_at": "2030-04-01T00:00:00Z", "metadata": {"owner": "ana"}}


async def test_create_returns_secret_once_and_stores_digest_only(store: Store) -> None:
    rec, secret = await store.create(BODY)
    assert secret.startswith("my-") and len(secret) == 43
    assert rec.digest == digest_of(secret)
    pub = rec.public()
    assert secret not in repr(pub) and "digest" not in pub
    assert pub["expires_at"] == 1901232000 and pub["quota"]["usd"] == 5.0
    assert pub["limits"] == {"rpm": 600, "tpm": 200000}
    found = await store.lookup(digest_of(secret))
    assert found is not None and found.id == "search-prod" and found.team == "search"
    assert await store.lookup(digest_of(secret + "x")) is None
    if isinstance(store, RedisKeyStore):
        raw = await store.client.hgetall(store._d)
        assert secret.encode() not in b"".join(list(raw) + list(raw.values()))
    check = found.limit_check()
    assert (check.scope, check.ident, check.rpm, check.tpm) == ("key", "search-prod", 600, 200000)
    q = found.quota_check()
    assert q is not None and (q.tokens, q.usd, q.period) == (5000, 5.0, "month")


async def test_crud(store: Store, clock: FakeClock) -> None:
    a, _ = await store.create(BODY)
    clock.advance(1)
    b, _ = await store.create({"team": "ml"})
    assert b.id.startswith("key-") and b.models is None and b.quota is None
    assert [r.id for r in await store.list()] == ["search-prod", b.id]
    with pytest.raises(InvalidRequest) as exc:
        await store.create({"id": "search-prod"})
    assert exc.value.code == "duplicate_key_id"
    patched = await store.patch("search-prod", {"limits": {"rpm": 5}, "models": ["*"]})
    assert patched.limits == {"rpm": 5, "tpm": None} and patched.models == ["*"]
    got = await store.get("search-prod")
    assert got is not None and got.limits["rpm"] == 5 and got.team == "search"
    with pytest.raises(InvalidRequest) as bad:
        await store.patch("search-prod", {"quota": {"period": "week"}})
    assert bad.value.param == "quota.period"
    with pytest.raises(InvalidRequest):
        await store.patch("search-prod", {"secret": "x"})
    with pytest.raises(NotFound):
        await store.patch("nope", {"team": "x"})
    assert await store.delete(b.id) is True
    assert await store.delete(b.id) is False
    assert await store.get(b.id) is None
    assert [r.id for r in await store.list()] == ["search-prod"]


async def test_revoked_and_expired_keys_are_refused(store: Store, clock: FakeClock) -> None:
    rec, secret = await store.create({"id": "a", "expires_at": clock.now + 60})
    _, other = await store.create({"id": "b"})
    assert await store.lookup(digest_of(secret)) is not None
    clock.advance(60)
    assert await store.lookup(digest_of(secret)) is None  # expired
    revoked = await store.revoke("b")
    assert revoked.revoked and (await store.get("b")).revoked  # type: ignore[union-attr]
    assert await store.lookup(digest_of(other)) is None


async def test_revocation_reaches_other_replica_within_cache_ttl(redis_url: str,
                                                                 clock: FakeClock) -> None:
    b1, b2 = RedisBackend.from_url(redis_url), RedisBackend.from_url(redis_url)
    admin = RedisKeyStore(b1.client, clock=clock)
    replica = RedisKeyStore(b2.client, clock=clock, cache_ttl_s=0.9)
    try:
        _, secret = await admin.create({"id": "k", "limits": {"rpm": 10}})
        d = digest_of(secret)
        assert (await replica.lookup(d)) is not None
        await admin.patch("k", {"limits": {"rpm": 1}})
        await admin.revoke("k")
        await b2.client.aclose()  # a cached key needs no Redis call at all
        cached = await replica.lookup(d)
        assert cached is not None and cached.limits["rpm"] == 10
        replica.client = RedisBackend.from_url(redis_url).client
        clock.advance(0.9)
        assert await replica.lookup(d) is None  # refreshed: revoked everywhere within 1 s
        await admin.delete("k")
        assert await admin.lookup(d) is None
        await replica.client.aclose()
    finally:
        await b1.close()


async def test_redis_down_serves_cached_keys_and_refuses_unknown_ones(own_redis,  # type: ignore[no-untyped-def]
                                                                     clock: FakeClock) -> None:
    from gateway.errors import ServiceUnavailable

    b = RedisBackend.from_url(own_redis.url)
    store = RedisKeyStore(b.client, clock=clock, cache_ttl_s=0.9)
    try:
        rec, secret = await store.create(BODY)
        assert (await store.lookup(digest_of(secret))).id == rec.id  # cached now
        own_redis.stop()
        clock.advance(5)  # the cache entry is stale: the store must ask Redis, which is down
        assert (await store.lookup(digest_of(secret))).id == rec.id  # the stale record serves
        with pytest.raises(ServiceUnavailable):
            await store.lookup(digest_of("my-never-seen"))
        with pytest.raises(ServiceUnavailable):
            await store.get("search-prod")
    finally:
        own_redis.start()
        await b.close()
