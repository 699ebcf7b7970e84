"""Redis killed and restarted under a running gateway, in both `on_redis_error` modes, and the
usage records of the outage kept until Redis returns."""
from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, KEY_LIM, KEY_QUOTA, MASTER, auth, eventually, fire, say
from tests.redis_fixture import RedisServer


async def redis_up_metric(gw: TestClient[Any, Any]) -> float:
    text = await (await gw.get("/metrics")).text()
    m = re.search(r"^modelyard_redis_up (\S+)$", text, re.M)
    assert m, "modelyard_redis_up is not exported"
    return float(m.group(1))


async def status_of(gw: TestClient[Any, Any], key: str = KEY_FREE, text: str = "hi") -> int:
    r = await gw.post("/v1/chat/completions", json=say(text), headers=auth(key))
    await r.read()
    return r.status


async def test_open_mode_keeps_serving_and_recovers(own_redis: RedisServer,
                                                    make_gateway: MakeGateway) -> None:
    gw = await make_gateway(own_redis.url)
    assert await status_of(gw) == 200
    assert await redis_up_metric(gw) == 1
    own_redis.stop()
    assert await status_of(gw) == 200  # served while Redis is down
    assert (await gw.get("/readyz")).status == 200

    async def down() -> bool:
        return await redis_up_metric(gw) == 0

    await eventually(down, 3.0, "modelyard_redis_up 0")
    # limits fall back to per-process counting: still exact in this one process
    results = await fire(7, lambda i: status_of(gw, KEY_LIM))
    assert sorted(results) == [200] * 5 + [429] * 2
    own_redis.start()

    async def up() -> bool:
        return await redis_up_metric(gw) == 1

    await eventually(up, 5.0, "modelyard_redis_up 1 after restart")
    assert await status_of(gw) == 200 and (await gw.get("/readyz")).status == 200


async def test_closed_mode_refuses_while_down_and_recovers(own_redis: RedisServer,
                                                           make_gateway: MakeGateway) -> None:
    gw = await make_gateway(own_redis.url, state={"redis_url": own_redis.url,
                                                  "on_redis_error": "closed",
                                                  "redis_budget_ms": 200})
    assert await status_of(gw) == 200
    await settle(gw)
    own_redis.cli("SAVE")  # the restarted server loads what was written before the outage
    own_redis.stop()

    async def readyz_503() -> bool:
        return (await gw.get("/readyz")).status == 503

    await eventually(readyz_503, 3.0, "/readyz 503 with Redis down")  # without any request
    r = await gw.post("/v1/chat/completions", json=say("hi"), headers=auth(KEY_LIM))
    assert r.status == 503
    body = await r.json()
    assert body["error"]["message"] and "redis" in body["error"]["message"].lower()
    assert await status_of(gw) == 503  # a key without limits too: closed means closed
    own_redis.start()

    async def ready() -> bool:
        return (await gw.get("/readyz")).status == 200

    await eventually(ready, 5.0, "/readyz 200 after restart")
    assert await status_of(gw, KEY_LIM) == 200
    assert await status_of(gw) == 200
    await settle(gw)  # the records of the refused requests are written once Redis is back
    r = await gw.get("/admin/usage?group_by=key", headers=auth(MASTER))
    got = {row["key"]: row["requests"] for row in (await r.json())["data"]}
    assert got == {"limited": 2, "free": 3}  # one before, the 503s during, one after each


async def test_usage_recorded_during_outage_is_kept(own_redis: RedisServer,
                                                    make_gateway: MakeGateway) -> None:
    """3 requests before, 4 during and 2 after an outage: all 9 counted once it is over."""
    gw = await make_gateway(own_redis.url)
    for _ in range(3):
        assert await status_of(gw, KEY_FREE, "usage 10 1") == 200
    await settle(gw)
    own_redis.cli("SAVE")  # the restarted server loads what was written before the outage
    own_redis.stop()
    for _ in range(4):
        assert await status_of(gw, KEY_FREE, "usage 100 10") == 200
    own_redis.start()
    for _ in range(2):
        assert await status_of(gw, KEY_FREE, "usage 1000 100") == 200
    rows: list[dict[str, Any]] = []

    async def all_there() -> bool:
        nonlocal rows
        r = await gw.get("/admin/usage?key=free&group_by=key", headers=auth(MASTER))
        if r.status != 200:
            return False
        rows = (await r.json())["data"]
        return bool(rows) and rows[0]["requests"] >= 9

    await eventually(all_there, 8.0, "nine usage records in Redis")
    [row] = rows
    assert row["requests"] == 9
    assert row["prompt_tokens"] == 3 * 10 + 4 * 100 + 2 * 1000
    assert row["completion_tokens"] == 3 * 1 + 4 * 10 + 2 * 100


async def test_closed_mode_outage_does_not_flood_the_log_with_gauge_errors(
        make_gateway: MakeGateway, caplog: Any) -> None:
    """With Redis unreachable and `on_redis_error: closed`, the team-quota gauge cannot be read
    (the limiter answers 503): the health loop says so at debug level, not with an error and a
    traceback at every interval (the outage itself is logged once, with its cause)."""
    import logging

    from tests.redis_fixture import free_port

    caplog.set_level(logging.DEBUG, logger="gateway.lifecycle")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gw = await make_gateway(dead, state={"redis_url": dead, "on_redis_error": "closed",
                                         "redis_budget_ms": 200})

    async def skipped() -> bool:
        return any(r.getMessage().startswith("health gauges not refreshed") for r in caplog.records)

    await eventually(skipped, 3.0, "the health loop's debug line")
    assert await status_of(gw) == 503
    assert not [r for r in caplog.records if r.getMessage() == "health gauge refresh failed"]
    outage = [r.getMessage() for r in caplog.records if r.getMessage().startswith("redis unavailable")]
    assert len(outage) == 1 and "refuse with 503" in outage[0] and "connect" in outage[0].lower()


async def test_key_view_says_when_its_quota_numbers_are_this_replicas_own(
        own_redis: RedisServer, make_gateway: MakeGateway) -> None:
    """`GET /v1/key` during an outage in open mode: `degraded` true and the numbers this
    replica counted since; false again, with the shared numbers, once Redis is back."""
    gw = await make_gateway(own_redis.url)

    async def view() -> dict[str, Any]:
        r = await gw.get("/v1/key", headers=auth(KEY_QUOTA))
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]

    assert await status_of(gw, KEY_QUOTA, "usage 30 10") == 200
    await settle(gw)
    before = await view()
    assert before["degraded"] is False and before["quotas"][0]["used"]["tokens"] == 40
    own_redis.cli("SAVE")
    own_redis.stop()

    async def down() -> bool:
        return await redis_up_metric(gw) == 0

    await eventually(down, 3.0, "modelyard_redis_up 0")
    assert await status_of(gw, KEY_QUOTA, "usage 5 2") == 200
    await settle(gw)
    during = await view()
    assert during["degraded"] is True
    assert during["quotas"][0]["used"]["tokens"] == 7  # this replica's own count since the outage
    own_redis.start()

    async def up() -> bool:
        return await redis_up_metric(gw) == 1

    await eventually(up, 5.0, "modelyard_redis_up 1 after restart")
    after = await view()
    assert after["degraded"] is False and after["quotas"][0]["used"]["tokens"] == 40  # shared again
    free = await gw.get("/v1/key", headers=auth(KEY_FREE))
    assert (await free.json())["degraded"] is False  # no quota: nothing from the state store
