"""One suite, run against the in-process backend and a real redis-server."""
from __future__ import annotations

import asyncio

import pytest

from gateway.errors import QuotaExceeded, RateLimited
from gateway.limits.spec import Decision, LimitCheck, QuotaCheck
from tests.limits.conftest import Kit


def key(rpm: int | None = None, tpm: int | None = None, ident: str = "k1") -> LimitCheck:
    return LimitCheck("key", ident, rpm, tpm)


async def fire(kit: Kit, n: int, checks: list[LimitCheck], est: int = 0,
               quotas: list[QuotaCheck] | None = None) -> list[Decision]:
    return list(await asyncio.gather(
        *(kit.backend.acquire(checks, est, quotas or []) for _ in range(n))))


async def test_exact_limit_under_concurrent_fire(kit: Kit) -> None:
    res = await fire(kit, 51, [key(rpm=50)])
    assert sum(d.ok for d in res) == 50
    refused = [d for d in res if not d.ok]
    assert len(refused) == 1 and refused[0].refused_scope == "key"
    assert refused[0].retry_after_s == pytest.approx(60 / 50, abs=0.01)


async def test_token_limit_exact_under_concurrent_fire(kit: Kit) -> None:
    res = await fire(kit, 11, [key(tpm=1000)], est=100)
    assert sum(d.ok for d in res) == 10


async def test_refusing_scope_consumes_nothing_elsewhere(kit: Kit) -> None:
    team = LimitCheck("team", "t1", 2, None)
    checks = [key(rpm=10, tpm=1000), team, LimitCheck("model", "m1", 100, 10_000)]
    res = await fire(kit, 3, checks, est=100)
    assert sum(d.ok for d in res) == 2
    assert [d.refused_scope for d in res if not d.ok] == ["team"]
    # the refused third request took nothing from the key or model scopes
    d = await kit.backend.acquire([key(rpm=10, tpm=1000), LimitCheck("model", "m1", 100, 10_000)], 0)
    assert d.ok and d.requests is not None and d.tokens is not None
    assert (d.requests.scope, d.requests.remaining) == ("key", 7)
    assert (d.tokens.scope, d.tokens.remaining) == ("key", 800)


async def test_refusal_names_scope_with_longest_wait(kit: Kit) -> None:
    checks = [key(rpm=1), LimitCheck("provider", "openai", 2, None)]
    assert (await kit.backend.acquire(checks, 0)).ok
    d = await kit.backend.acquire([key(rpm=1), LimitCheck("provider", "openai", 1, None)], 0)
    assert not d.ok and d.refused_scope == "key"
    assert d.retry_after_s == pytest.approx(60.0, abs=0.01)
    with pytest.raises(RateLimited) as exc:
        d.raise_for_refusal()
    assert exc.value.scope == "key" and exc.value.headers["Retry-After"] == "60"
    assert "key" in exc.value.message


async def test_refill_over_time(kit: Kit) -> None:
    assert sum(d.ok for d in await fire(kit, 7, [key(rpm=6)])) == 6
    assert not (await kit.backend.acquire([key(rpm=6)], 0)).ok
    kit.clock.advance(9.9)  # 6 rpm = one request per 10 s
    assert not (await kit.backend.acquire([key(rpm=6)], 0)).ok
    kit.clock.advance(0.2)
    assert (await kit.backend.acquire([key(rpm=6)], 0)).ok
    kit.clock.advance(3600)  # never more than the bucket holds
    assert sum(d.ok for d in await fire(kit, 8, [key(rpm=6)])) == 6


async def test_reconcile_refunds_and_charges(kit: Kit) -> None:
    checks = [key(tpm=1000)]
    d = await kit.backend.acquire(checks, 600)
    assert d.ok and d.tokens is not None and d.tokens.remaining == 400
    assert not (await kit.backend.acquire(checks, 600)).ok
    assert d.reservation is not None
    await kit.backend.reconcile(d.reservation, 100)  # 500 given back
    d2 = await kit.backend.acquire(checks, 0)
    assert d2.tokens is not None and d2.tokens.remaining == 900
    d3 = await kit.backend.acquire(checks, 100)
    assert d3.ok and d3.reservation is not None
    await kit.backend.reconcile(d3.reservation, 1500)  # 1400 more than reserved → negative
    refused = await kit.backend.acquire(checks, 0)
    assert not refused.ok and refused.refused_scope == "key"
    assert refused.retry_after_s == pytest.approx(600 * 60 / 1000, abs=0.05)
    await kit.backend.reconcile(d3.reservation, 0)  # settled once only
    assert not (await kit.backend.acquire(checks, 0)).ok


async def test_failed_call_refunds_all_but_used(kit: Kit) -> None:
    d = await kit.backend.acquire([key(tpm=1000)], 800)
    assert d.reservation is not None
    await kit.backend.reconcile(d.reservation, 0)
    d2 = await kit.backend.acquire([key(tpm=1000)], 1000)
    assert d2.ok


async def test_release_undoes_request_and_tokens(kit: Kit) -> None:
    checks = [key(rpm=1, tpm=100)]
    d = await kit.backend.acquire(checks, 50)
    assert d.reservation is not None
    await kit.backend.release(d.reservation)
    d2 = await kit.backend.acquire(checks, 100)
    assert d2.ok


async def test_huge_estimate_needs_a_full_bucket_not_forever(kit: Kit) -> None:
    d = await kit.backend.acquire([key(tpm=1000)], 5000)
    assert d.ok
    refused = await kit.backend.acquire([key(tpm=1000)], 5000)
    assert not refused.ok and refused.retry_after_s == pytest.approx(5 * 60, abs=0.1)


async def test_headers_show_scope_with_least_left(kit: Kit) -> None:
    checks = [key(rpm=100, tpm=10_000), LimitCheck("team", "t1", 10, 50_000)]
    d = await kit.backend.acquire(checks, 1000)
    assert d.ok
    assert d.headers() == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "6s",
    }
    kit.clock.advance(3)
    d = await kit.backend.acquire(checks, 100)
    hdr = d.headers()
    assert hdr["x-ratelimit-remaining-requests"] == "8"
    assert hdr["x-ratelimit-reset-requests"] == "9s"  # 1.5 of 10 missing at 1 per 6 s
    assert hdr["x-ratelimit-remaining-tokens"] == "9400"
    assert hdr["x-ratelimit-reset-tokens"] == "3.6s"


async def test_no_limits_means_no_headers(kit: Kit) -> None:
    d = await kit.backend.acquire([key(), LimitCheck("team", "t1")], 100)
    assert d.ok and d.headers() == {}


QUOTA = QuotaCheck("key", "k1", tokens=1000, usd=None, period="day")


async def test_quota_exhaustion_and_utc_day_reset(kit: Kit) -> None:
    d = await kit.backend.acquire([key(rpm=100)], 10, [QUOTA])
    assert d.ok and d.reservation is not None
    await kit.backend.reconcile(d.reservation, 1200, cost_usd=0.5)
    refused = await kit.backend.acquire([key(rpm=100)], 10, [QUOTA])
    assert not refused.ok and refused.quota_exceeded and refused.refused_scope == "key"
    with pytest.raises(QuotaExceeded):
        refused.raise_for_refusal()
    [u] = await kit.backend.usage([QUOTA])
    assert (u.period_key, u.requests, u.tokens, u.cost_usd) == ("2030-03-15", 1, 1200, 0.5)
    assert u.remaining_tokens == 0 and u.remaining_usd is None
    kit.clock.advance(12 * 3600 - 1)  # 23:59:59 UTC, still spent
    assert not (await kit.backend.acquire([key(rpm=100)], 10, [QUOTA])).ok
    kit.clock.advance(1)  # midnight UTC: a new day
    assert (await kit.backend.acquire([key(rpm=100)], 10, [QUOTA])).ok
    [u] = await kit.backend.usage([QUOTA])
    assert (u.period_key, u.requests, u.tokens, u.remaining_tokens) == ("2030-03-16", 1, 0, 1000)


async def test_usd_quota_per_team_month_and_no_partial_consumption(kit: Kit) -> None:
    team_q = QuotaCheck("team", "t1", tokens=None, usd=1.0, period="month")
    key_q = QuotaCheck("key", "k1", period="total")  # usage counted only
    checks = [key(rpm=5), LimitCheck("team", "t1")]
    d = await kit.backend.acquire(checks, 10, [key_q, team_q])
    assert d.reservation is not None
    await kit.backend.reconcile(d.reservation, 100, cost_usd=1.25)
    refused = await kit.backend.acquire(checks, 10, [key_q, team_q])
    assert refused.quota_exceeded and refused.refused_scope == "team"
    ku, tu = await kit.backend.usage([key_q, team_q])
    assert (ku.period_key, ku.requests, ku.tokens, ku.cost_usd) == ("total", 1, 100, 1.25)
    assert (tu.period_key, tu.remaining_usd, tu.remaining_tokens) == ("2030-03", 0.0, None)
    left = await kit.backend.acquire(checks, 0)  # the refused request consumed nothing
    assert left.requests is not None and left.requests.remaining == 3
    kit.clock.advance(17 * 86400)  # 2030-04-01 12:00 UTC: new month
    assert (await kit.backend.acquire(checks, 10, [key_q, team_q])).ok


async def test_cooldowns(kit: Kit) -> None:
    b = kit.backend
    await b.trip("openai:gpt-4o", 30)
    await b.trip("anthropic:x", 5)
    await b.trip("anthropic:x", 1)  # the later end wins
    other = await kit.another()
    cooled = await other.cooled()
    assert set(cooled) == {"openai:gpt-4o", "anthropic:x"}
    assert cooled["openai:gpt-4o"] == pytest.approx(kit.clock.now + 30, abs=0.01)
    assert cooled["anthropic:x"] == pytest.approx(kit.clock.now + 5, abs=0.01)
    await other.clear("openai:gpt-4o")
    kit.clock.advance(5)
    assert await b.cooled() == {}


async def test_shared_state_between_instances(kit: Kit) -> None:
    other = await kit.another()
    res = await asyncio.gather(*(b.acquire([key(rpm=4)], 0)
                                 for b in (kit.backend, other) * 3))
    assert sum(d.ok for d in res) == 4


async def test_reconcile_soon_settles_many_requests_of_one_tick(kit: Kit) -> None:
    """Queued reconciles (Redis: one pipeline per event-loop tick) settle every reservation
    exactly once, including quota debits."""
    checks = [key(tpm=10_000)]
    quota = [QuotaCheck("key", "k1", tokens=1_000_000, period="total")]
    ds = await fire(kit, 20, checks, est=400, quotas=quota)
    assert all(d.ok and d.reservation is not None for d in ds)
    for d in ds:
        kit.backend.reconcile_soon(d.reservation, 100, 0.5)  # type: ignore[arg-type]
        kit.backend.reconcile_soon(d.reservation, 100, 0.5)  # type: ignore[arg-type] # once only
    bg = getattr(kit.backend, "_bg", None)  # Redis: the queued pipeline (memory: done at once)
    if bg is not None:
        await bg.drain()
    d = await kit.backend.acquire(checks, 0)
    assert d.tokens is not None and d.tokens.remaining == 10_000 - 20 * 100
    [u] = await kit.backend.usage(quota)
    assert (u.requests, u.tokens) == (20, 2000) and u.cost_usd == pytest.approx(10.0)
