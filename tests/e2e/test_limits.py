"""Issue 5 through the gateway: exact rate limits and quotas, in-process and with Redis."""
from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import (
    KEY_FREE, KEY_LIM, MASTER, KEY_Q1, KEY_Q2, KEY_QUOTA, KEY_T1, KEY_T2, KEY_TPM, auth, fire, say,
)
from tests.fakes import FakeOpenAI

DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(ms|s)$")


async def post(gw: TestClient[Any, Any], key: str, body: dict[str, Any]) -> tuple[int, Any,
                                                                                   dict[str, str]]:
    r = await gw.post("/v1/chat/completions", json=body, headers=auth(key))
    data = await r.json() if r.content_type == "application/json" else await r.text()
    return r.status, data, dict(r.headers)


def assert_rate_limited(results: list[tuple[int, Any, dict[str, str]]], scope: str) -> None:
    for status, body, headers in results:
        if status == 200:
            continue
        assert status == 429, body
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert f"for {scope}" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1


async def test_key_rpm_exact_under_concurrent_fire(mode_url: str, make_gateway: MakeGateway,
                                                   fake: FakeOpenAI) -> None:
    gw = await make_gateway(mode_url)
    results = await fire(9, lambda i: post(gw, KEY_LIM, say(f"hi {i}")))
    assert sorted(s for s, _, _ in results) == [200] * 5 + [429] * 4
    assert_rate_limited(results, "key")
    assert len(fake.requests) == 5  # refused requests never reach the upstream
    await settle(gw)  # and every request, refused or not, has exactly one usage record
    r = await gw.get("/admin/usage?key=limited&group_by=key", headers=auth(MASTER))
    [row] = (await r.json())["data"]
    assert (row["requests"], row["errors"], row["total_tokens"]) == (9, 4, 5 * 29)


async def test_team_rpm_shared_by_two_keys(mode_url: str, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(mode_url)
    results = await fire(8, lambda i: post(gw, (KEY_T1, KEY_T2)[i % 2], say("hi")))
    assert sum(s == 200 for s, _, _ in results) == 4  # team t: rpm 4 over both keys
    assert_rate_limited(results, "team")


async def test_route_rpm_over_all_keys(mode_url: str, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(mode_url)
    results = await fire(6, lambda i: post(gw, (KEY_FREE, KEY_T1)[i % 2], say("hi", "capped/m")))
    assert sum(s == 200 for s, _, _ in results) == 3  # route capped/m: rpm 3, whatever the key
    assert_rate_limited(results, "model")
    # another route is not affected by capped/m's limit
    status, _, _ = await post(gw, KEY_FREE, say("hi"))
    assert status == 200


async def test_tpm_reserve_then_reconcile_refunds(mode_url: str, make_gateway: MakeGateway) -> None:
    """tpm 1000, each request reserves ~425 (body/4 + max_tokens 400) but uses 15: without the
    refund the third request would be refused; with it, six in a row fit."""
    gw = await make_gateway(mode_url)
    remaining = []
    for _ in range(6):
        status, body, headers = await post(gw, KEY_TPM, say("usage 10 5", max_tokens=400))
        assert status == 200, body
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        remaining.append(int(headers["x-ratelimit-remaining-tokens"]))
        await settle(gw)
    assert 560 <= remaining[0] <= 580  # 1000 - the estimate
    assert all(r >= remaining[0] - 15 * 6 for r in remaining)  # only the 15 used are gone
    # a request that used far more than its estimate drives the bucket below zero: refused next
    status, _, _ = await post(gw, KEY_TPM, say("usage 900 900", max_tokens=10))
    assert status == 200
    await settle(gw)
    status, body, headers = await post(gw, KEY_TPM, say("usage 1 1", max_tokens=10))
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert "for key" in body["error"]["message"] and int(headers["Retry-After"]) >= 1


async def test_ratelimit_headers_on_every_completion(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    for i in range(2):
        status, _, h = await post(gw, KEY_LIM, say("hi"))
        assert status == 200
        assert h["x-ratelimit-limit-requests"] == "5"
        assert h["x-ratelimit-remaining-requests"] == str(4 - i)
        assert DURATION.match(h["x-ratelimit-reset-requests"]), h["x-ratelimit-reset-requests"]
    r = await gw.post("/v1/chat/completions", json=say("hi", stream=True), headers=auth(KEY_LIM))
    assert r.status == 200 and (await r.text()).endswith("data: [DONE]\n\n")
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "2"
    status, _, h = await post(gw, KEY_TPM, say("hi", max_tokens=100))
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert 850 <= int(h["x-ratelimit-remaining-tokens"]) < 1000
    assert DURATION.match(h["x-ratelimit-reset-tokens"])
    for key in (KEY_FREE,):  # a key without limits anywhere: no rate-limit headers at all
        status, _, h = await post(gw, key, say("hi"))
        assert status == 200
        assert not [k for k in h if k.lower().startswith("x-ratelimit")]


async def my_key(gw: TestClient[Any, Any], key: str) -> dict[str, Any]:
    r = await gw.get("/v1/key", headers=auth(key))
    assert r.status == 200
    return dict(await r.json())


async def test_key_quota_spent_then_refused(mode_url: str, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(mode_url)
    info = await my_key(gw, KEY_QUOTA)
    assert info["quota"] == {"tokens": 100, "usd": None, "period": "day"}
    assert info["usage"]["tokens"] == 0 and info["remaining"] == {"tokens": 100, "usd": None}
    status, _, _ = await post(gw, KEY_QUOTA, say("usage 60 30"))
    assert status == 200
    await settle(gw)
    info = await my_key(gw, KEY_QUOTA)
    assert (info["usage"]["requests"], info["usage"]["tokens"]) == (1, 90)
    assert info["remaining"]["tokens"] == 10
    status, _, _ = await post(gw, KEY_QUOTA, say("usage 60 30"))  # 90 < 100: still allowed
    assert status == 200
    await settle(gw)
    status, body, _ = await post(gw, KEY_QUOTA, say("usage 1 1"))
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert "key" in body["error"]["message"]
    info = await my_key(gw, KEY_QUOTA)
    assert info["usage"]["tokens"] == 180 and info["remaining"]["tokens"] == 0


async def test_team_quota_shared_by_two_keys(mode_url: str, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(mode_url)
    assert (await post(gw, KEY_Q1, say("usage 50 20")))[0] == 200
    await settle(gw)
    assert (await post(gw, KEY_Q2, say("usage 50 20")))[0] == 200  # 70 < 120
    await settle(gw)
    for key in (KEY_Q1, KEY_Q2):  # 140 >= 120: spent for both keys of team q
        status, body, _ = await post(gw, key, say("hi"))
        assert status == 429 and body["error"]["code"] == "insufficient_quota"
        assert "team" in body["error"]["message"]
    assert (await post(gw, KEY_FREE, say("hi")))[0] == 200  # other teams unaffected
