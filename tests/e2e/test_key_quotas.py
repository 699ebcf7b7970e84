"""`GET /v1/key` shows every quota that binds the key (its own and its team's) and the tightest,
through the gateway, in-process and with Redis."""
from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, KEY_Q1, KEY_Q2, KEY_QUOTA, auth, config, say
from tests.fakes import FakeOpenAI

KEY_BOTH = "sk-e2e-both-4b4b4b"  # own quota, in team qq (team quota)
KEY_MATE = "sk-e2e-mate-5c5c5c"  # team qq, no quota of its own
KEY_UNCAPPED = "sk-e2e-uncapped-6d6d6d"  # a quota that caps nothing, in team q
KEY_UNCAPPED_ALONE = "sk-e2e-uncapped-7e7e7e"  # the same, in a team without a quota
OLD_FIELDS = {"id", "team", "models", "limits", "quota", "expires_at", "usage", "remaining"}
NEW_FIELDS = {"quotas", "effective_remaining", "degraded"}


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def month() -> str:
    return today()[:7]


async def chat(gw: TestClient[Any, Any], key: str, text: str) -> tuple[int, Any]:
    r = await gw.post("/v1/chat/completions", json=say(text), headers=auth(key))
    return r.status, await r.json()


async def my_key(gw: TestClient[Any, Any], key: str) -> dict[str, Any]:
    r = await gw.get("/v1/key", headers=auth(key))
    assert r.status == 200
    info = dict(await r.json())
    assert set(info) == OLD_FIELDS | NEW_FIELDS
    return info


def with_extra_keys(gw_config: dict[str, Any]) -> dict[str, Any]:
    keys = [*gw_config["auth"]["keys"],
            {"id": "both", "key": KEY_BOTH, "team": "qq",
             "quota": {"tokens": 1000, "usd": 0.0005, "period": "day"}},
            {"id": "mate", "key": KEY_MATE, "team": "qq"},
            {"id": "uncapped", "key": KEY_UNCAPPED, "team": "q", "quota": {"period": "day"}},
            {"id": "alone", "key": KEY_UNCAPPED_ALONE, "team": "free",
             "quota": {"period": "month"}}]
    teams = {**gw_config["teams"], "qq": {"quota": {"tokens": 150, "usd": 5, "period": "month"}}}
    return {"auth": {**gw_config["auth"], "keys": keys}, "teams": teams}


async def gateway(mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI,
                  ) -> TestClient[Any, Any]:
    return await make_gateway(mode_url, **with_extra_keys(config(fake.base_url, mode_url)))


async def test_team_only_quota_is_shown_with_its_usage(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI) -> None:
    """q1 and q2 have no quota of their own; team q has {tokens: 120, period: day}."""
    gw = await gateway(mode_url, make_gateway, fake)
    info = await my_key(gw, KEY_Q1)
    assert info["quota"] is None and info["remaining"] == {"tokens": None, "usd": None}
    assert info["quotas"] == [{
        "scope": "team", "id": "q", "period": "day", "period_key": today(),
        "limit": {"tokens": 120, "usd": None},
        "used": {"requests": 0, "tokens": 0, "cost_usd": 0.0},
        "remaining": {"tokens": 120, "usd": None}, "exhausted": False}]
    assert info["effective_remaining"] == {"tokens": 120, "usd": None, "tokens_scope": "team",
                                           "usd_scope": None, "exhausted_by": None}

    assert (await chat(gw, KEY_Q1, "usage 50 20"))[0] == 200  # 70 tokens, $0.00026
    assert (await chat(gw, KEY_Q2, "usage 10 5"))[0] == 200  # 15 tokens, $0.00006
    await settle(gw)
    info = await my_key(gw, KEY_Q1)
    # the key's own fields keep their meaning: its own spend, all time; no quota of its own
    assert info["usage"] == {"requests": 1, "tokens": 70, "cost_usd": 0.00026, "period": "total"}
    assert info["remaining"] == {"tokens": None, "usd": None}
    # the team's quota: both keys' use
    [team] = info["quotas"]
    assert team["used"] == {"requests": 2, "tokens": 85, "cost_usd": 0.00032}
    assert team["remaining"] == {"tokens": 35, "usd": None} and team["exhausted"] is False
    assert info["effective_remaining"] == {"tokens": 35, "usd": None, "tokens_scope": "team",
                                           "usd_scope": None, "exhausted_by": None}
    assert (await my_key(gw, KEY_Q2))["quotas"] == info["quotas"]  # one shared budget

    assert (await chat(gw, KEY_Q2, "usage 30 10"))[0] == 200  # 125 >= 120: spent
    await settle(gw)
    info = await my_key(gw, KEY_Q1)
    [team] = info["quotas"]
    assert (team["used"]["tokens"], team["remaining"], team["exhausted"]) == (
        125, {"tokens": 0, "usd": None}, True)
    assert info["effective_remaining"] == {"tokens": 0, "usd": None, "tokens_scope": "team",
                                           "usd_scope": None, "exhausted_by": "team"}
    status, body = await chat(gw, KEY_Q1, "hi")  # what the view said: refused by the team
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert "team" in body["error"]["message"]


async def test_own_and_team_quota_both_shown_tightest_effective(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI) -> None:
    """both: {tokens: 1000, usd: 0.0005, day}; its team qq: {tokens: 150, usd: 5, month}."""
    gw = await gateway(mode_url, make_gateway, fake)
    assert (await chat(gw, KEY_BOTH, "usage 50 20"))[0] == 200  # 70 tokens, $0.00026
    assert (await chat(gw, KEY_MATE, "usage 10 5"))[0] == 200  # 15 tokens, $0.00006 (team only)
    await settle(gw)
    info = await my_key(gw, KEY_BOTH)
    assert info["quota"] == {"tokens": 1000, "usd": 0.0005, "period": "day"}
    assert info["usage"] == {"requests": 1, "tokens": 70, "cost_usd": 0.00026, "period": "day",
                             "period_key": today()}
    assert info["remaining"] == {"tokens": 930, "usd": 0.00024}  # the key's own, as before
    assert info["quotas"] == [
        {"scope": "key", "id": "both", "period": "day", "period_key": today(),
         "limit": {"tokens": 1000, "usd": 0.0005},
         "used": {"requests": 1, "tokens": 70, "cost_usd": 0.00026},
         "remaining": {"tokens": 930, "usd": 0.00024}, "exhausted": False},
        {"scope": "team", "id": "qq", "period": "month", "period_key": month(),
         "limit": {"tokens": 150, "usd": 5.0},
         "used": {"requests": 2, "tokens": 85, "cost_usd": 0.00032},
         "remaining": {"tokens": 65, "usd": 4.99968}, "exhausted": False}]
    assert info["effective_remaining"] == {"tokens": 65, "usd": 0.00024, "tokens_scope": "team",
                                           "usd_scope": "key", "exhausted_by": None}
    mate = await my_key(gw, KEY_MATE)  # the team's key without a quota sees only the team's
    assert mate["quotas"] == info["quotas"][1:] and mate["remaining"] == {"tokens": None,
                                                                          "usd": None}
    assert mate["effective_remaining"] == {"tokens": 65, "usd": 4.99968, "tokens_scope": "team",
                                           "usd_scope": "team", "exhausted_by": None}

    assert (await chat(gw, KEY_BOTH, "usage 50 20"))[0] == 200  # key: $0.00052 >= $0.0005
    await settle(gw)
    info = await my_key(gw, KEY_BOTH)
    own, team = info["quotas"]
    assert (own["used"]["cost_usd"], own["remaining"], own["exhausted"]) == (
        0.00052, {"tokens": 860, "usd": 0.0}, True)
    assert (team["used"]["tokens"], team["remaining"]["tokens"], team["exhausted"]) == (
        155, 0, True)
    assert info["remaining"] == {"tokens": 860, "usd": 0.0}
    assert info["effective_remaining"] == {"tokens": 0, "usd": 0.0, "tokens_scope": "team",
                                           "usd_scope": "key", "exhausted_by": "key"}
    status, body = await chat(gw, KEY_BOTH, "hi")
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert "key quota" in body["error"]["message"]


async def test_key_without_any_quota_shows_what_it_did(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI) -> None:
    gw = await gateway(mode_url, make_gateway, fake)
    assert (await chat(gw, KEY_FREE, "usage 50 20"))[0] == 200
    await settle(gw)
    info = await my_key(gw, KEY_FREE)
    assert {k: info[k] for k in OLD_FIELDS} == {
        "id": "free", "team": "free", "models": None, "limits": None, "quota": None,
        "expires_at": None,
        "usage": {"requests": 1, "tokens": 70, "cost_usd": 0.00026, "period": "total"},
        "remaining": {"tokens": None, "usd": None}}
    assert info["quotas"] == []
    assert info["effective_remaining"] == {"tokens": None, "usd": None, "tokens_scope": None,
                                           "usd_scope": None, "exhausted_by": None}


async def test_own_quota_only_unchanged(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI) -> None:
    """`quota` (team solo has no quota): {tokens: 100, period: day}."""
    gw = await gateway(mode_url, make_gateway, fake)
    assert (await chat(gw, KEY_QUOTA, "usage 60 30"))[0] == 200
    await settle(gw)
    info = await my_key(gw, KEY_QUOTA)
    assert info["usage"] == {"requests": 1, "tokens": 90, "cost_usd": 0.00036, "period": "day",
                             "period_key": today()}
    assert info["remaining"] == {"tokens": 10, "usd": None}
    assert [q["scope"] for q in info["quotas"]] == ["key"]
    assert info["quotas"][0]["remaining"] == info["remaining"]
    assert info["effective_remaining"] == {"tokens": 10, "usd": None, "tokens_scope": "key",
                                           "usd_scope": None, "exhausted_by": None}


async def test_quota_capping_nothing_is_not_the_team_s(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI) -> None:
    """A key quota with neither tokens nor usd caps nothing: `remaining` stays null and `usage`
    is the key's own spend in that period (it used to show the team's quota as the key's)."""
    gw = await gateway(mode_url, make_gateway, fake)
    assert (await chat(gw, KEY_UNCAPPED, "usage 50 20"))[0] == 200
    assert (await chat(gw, KEY_Q1, "usage 10 5"))[0] == 200
    await settle(gw)
    info = await my_key(gw, KEY_UNCAPPED)
    assert info["quota"] == {"tokens": None, "usd": None, "period": "day"}
    assert info["usage"] == {"requests": 1, "tokens": 70, "cost_usd": 0.00026, "period": "day"}
    assert info["remaining"] == {"tokens": None, "usd": None}
    [team] = info["quotas"]
    assert (team["scope"], team["used"]["tokens"], team["remaining"]["tokens"]) == ("team", 85, 35)
    # and without a team quota there is nothing to read from the limiter (it used to be a 500)
    info = await my_key(gw, KEY_UNCAPPED_ALONE)
    assert info["usage"] == {"requests": 0, "tokens": 0, "cost_usd": 0.0, "period": "month"}
    assert (info["remaining"], info["quotas"]) == ({"tokens": None, "usd": None}, [])
