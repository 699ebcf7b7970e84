"""What `GET /v1/key` reads from the state layer: every quota binding a key (its own and its
team's), used and left, and the tightest of them, in the in-process and the Redis backend."""
from __future__ import annotations

import uuid

from redis.crc import key_slot

from gateway.limits.redis_backend import RedisBackend
from gateway.limits.spec import (
    LimitCheck, QuotaCheck, QuotaUsage, effective_remaining, quota_slot,
)
from tests.limits.conftest import T0, Kit
from tests.redis_fixture import RedisCluster

NOTHING_LEFT_CAPPED = {"tokens": None, "usd": None, "tokens_scope": None, "usd_scope": None,
                       "exhausted_by": None}


async def spend(kit: Kit, quotas: list[QuotaCheck], tokens: int, usd: float) -> None:
    d = await kit.backend.acquire([LimitCheck("key", "any", 1000, None)], 10, quotas)
    assert d.ok and d.reservation is not None
    await kit.backend.reconcile(d.reservation, tokens, cost_usd=usd)


async def test_key_and_team_quotas_used_remaining_and_tightest(kit: Kit) -> None:
    key_q = QuotaCheck("key", "k1", tokens=1000, usd=2.0, period="day")
    team_q = QuotaCheck("team", "t1", tokens=500, usd=10.0, period="month")
    await spend(kit, [key_q, team_q], 300, 1.5)  # k1
    await spend(kit, [team_q], 150, 0.25)  # another key of t1, with no quota of its own
    ku, tu = await kit.backend.usage([key_q, team_q])
    assert ku.public() == {
        "scope": "key", "id": "k1", "period": "day", "period_key": "2030-03-15",
        "limit": {"tokens": 1000, "usd": 2.0},
        "used": {"requests": 1, "tokens": 300, "cost_usd": 1.5},
        "remaining": {"tokens": 700, "usd": 0.5}, "exhausted": False}
    assert tu.public() == {
        "scope": "team", "id": "t1", "period": "month", "period_key": "2030-03",
        "limit": {"tokens": 500, "usd": 10.0},
        "used": {"requests": 2, "tokens": 450, "cost_usd": 1.75},
        "remaining": {"tokens": 50, "usd": 8.25}, "exhausted": False}
    # tokens: the team has least left; USD: the key
    assert effective_remaining([ku, tu]) == {
        "tokens": 50, "usd": 0.5, "tokens_scope": "team", "usd_scope": "key",
        "exhausted_by": None}

    await spend(kit, [key_q, team_q], 60, 0.125)  # team: 510 >= 500 tokens, spent
    ku, tu = await kit.backend.usage([key_q, team_q])
    assert (ku.remaining_tokens, ku.remaining_usd, ku.exhausted) == (640, 0.375, False)
    assert (tu.tokens, tu.remaining_tokens, tu.remaining_usd, tu.exhausted) == (
        510, 0, 8.125, True)
    assert effective_remaining([ku, tu]) == {
        "tokens": 0, "usd": 0.375, "tokens_scope": "team", "usd_scope": "key",
        "exhausted_by": "team"}
    # what the view says is what acquire does: refused by the team's quota
    refused = await kit.backend.acquire([LimitCheck("key", "k1", 1000, None)], 10,
                                        [key_q, team_q])
    assert not refused.ok and refused.quota_exceeded and refused.refused_scope == "team"


async def test_team_only_quota(kit: Kit) -> None:
    team_q = QuotaCheck("team", "t2", tokens=None, usd=1.0, period="total")
    [before] = await kit.backend.usage([team_q])
    assert before.public() == {
        "scope": "team", "id": "t2", "period": "total", "period_key": "total",
        "limit": {"tokens": None, "usd": 1.0},
        "used": {"requests": 0, "tokens": 0, "cost_usd": 0.0},
        "remaining": {"tokens": None, "usd": 1.0}, "exhausted": False}
    await spend(kit, [team_q], 40, 0.75)
    [tu] = await kit.backend.usage([team_q])
    assert (tu.requests, tu.tokens, tu.cost_usd, tu.remaining_usd) == (1, 40, 0.75, 0.25)
    assert effective_remaining([tu]) == {
        "tokens": None, "usd": 0.25, "tokens_scope": None, "usd_scope": "team",
        "exhausted_by": None}
    await spend(kit, [team_q], 10, 0.25)  # exactly the limit: spent (>=)
    [tu] = await kit.backend.usage([team_q])
    assert (tu.cost_usd, tu.remaining_usd, tu.exhausted) == (1.0, 0.0, True)
    assert effective_remaining([tu])["exhausted_by"] == "team"
    assert (await kit.backend.acquire([], 0, [team_q])).refused_scope == "team"


async def test_tie_names_the_key_and_spent_key_comes_first(kit: Kit) -> None:
    key_q = QuotaCheck("key", "k3", tokens=100, period="day")
    team_q = QuotaCheck("team", "t3", tokens=100, period="day")
    await spend(kit, [key_q, team_q], 100, 0.0)
    usages = await kit.backend.usage([key_q, team_q])
    assert [u.scope for u in usages] == ["key", "team"]
    assert effective_remaining(usages) == {
        "tokens": 0, "usd": None, "tokens_scope": "key", "usd_scope": None,
        "exhausted_by": "key"}


def test_no_quota_at_all() -> None:
    assert effective_remaining([]) == NOTHING_LEFT_CAPPED


def test_usd_remaining_rounded_and_clamped() -> None:
    u = QuotaUsage("key", "k", "day", "2030-03-15", requests=3, tokens=7, cost_usd=0.3,
                   limit_usd=0.1)
    assert u.public()["remaining"] == {"tokens": None, "usd": 0.0}
    assert u.exhausted
    u = QuotaUsage("key", "k", "day", "2030-03-15", cost_usd=0.1 + 0.2, limit_usd=1.0)
    assert u.public()["remaining"]["usd"] == 0.7


async def test_cluster_reads_key_and_team_from_their_own_slots(
        redis_cluster: RedisCluster) -> None:
    run = uuid.uuid4().hex[:8]
    b = RedisBackend.from_url(redis_cluster.url, clock=lambda: T0)
    await b.start()
    try:
        key_q = QuotaCheck("key", f"k-{run}", tokens=1000, period="month")
        team_q = QuotaCheck("team", f"t-{run}", tokens=200, usd=3.0, period="day")
        groups = b._plan((), [quota_slot(q, T0) for q in (key_q, team_q)])
        assert len({key_slot(g.keys[0].encode()) for g in groups}) == 2  # two slot groups
        d = await b.acquire([LimitCheck("key", f"k-{run}", 100, None)], 10, [key_q, team_q])
        assert d.reservation is not None
        await b.reconcile(d.reservation, 120, cost_usd=0.5)
        ku, tu = await b.usage([key_q, team_q])
        assert (ku.scope, ku.period_key, ku.tokens, ku.remaining_tokens) == (
            "key", "2030-03", 120, 880)
        assert (tu.scope, tu.period_key, tu.tokens, tu.remaining_tokens, tu.remaining_usd) == (
            "team", "2030-03-15", 120, 80, 2.5)
        assert effective_remaining([ku, tu]) == {
            "tokens": 80, "usd": 2.5, "tokens_scope": "team", "usd_scope": "team",
            "exhausted_by": None}
    finally:
        await b.close()
