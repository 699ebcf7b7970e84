"""Dynamic keys through one gateway, in-process and with Redis: created, used with their own
limits and quota, changed and revoked through /admin/keys."""
from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, MASTER, auth, eventually, say


async def admin(gw: TestClient[Any, Any], method: str, path: str, body: Any = None,
                key: str = MASTER) -> tuple[int, Any]:
    r = await gw.request(method, path, json=body, headers=auth(key))
    return r.status, (await r.json() if r.content_type == "application/json" else None)


async def chat(gw: TestClient[Any, Any], key: str, text: str = "hi",
               model: str = "priced/m") -> tuple[int, dict[str, str], Any]:
    r = await gw.post("/v1/chat/completions", json=say(text, model), headers=auth(key))
    return r.status, dict(r.headers), await r.json()


async def test_dynamic_key_limits_quota_patch_revoke(mode_url: str,
                                                     make_gateway: MakeGateway) -> None:
    gw = await make_gateway(mode_url)
    status, created = await admin(gw, "POST", "/admin/keys", {
        "id": "dyn", "team": "t", "models": ["priced/*"], "limits": {"rpm": 3},
        "quota": {"tokens": 50, "period": "total"}, "metadata": {"owner": "e2e"}})
    assert status == 201, created
    secret = created["key"]
    assert created["quota"] == {"tokens": 50, "usd": None, "period": "total"}
    assert created["limits"] == {"rpm": 3, "tpm": None} and secret.startswith("my-")
    status, one = await admin(gw, "GET", "/admin/keys/dyn")
    assert status == 200 and "key" not in one and secret not in str(one)
    assert one["metadata"] == {"owner": "e2e"}
    status, headers, _ = await chat(gw, secret, "usage 20 10")
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "3"
    status, _, err = await chat(gw, secret, model="free/m")  # not in its models
    assert status == 403 and err["error"]["code"]
    await settle(gw)
    r = await gw.get("/v1/key", headers=auth(secret))
    info = await r.json()
    assert info["id"] == "dyn" and info["team"] == "t" and info["models"] == ["priced/*"]
    assert info["limits"] == {"rpm": 3, "tpm": None}
    assert info["usage"]["tokens"] == 30 and info["remaining"]["tokens"] == 20
    status, _, _ = await chat(gw, secret, "usage 20 10")  # 30 < 50: allowed, then spent
    await settle(gw)
    status, _, err = await chat(gw, secret)
    assert status == 429 and err["error"]["code"] == "insufficient_quota"
    # PATCH: a bigger quota and another rpm, in force within a second
    status, patched = await admin(gw, "PATCH", "/admin/keys/dyn",
                                  {"limits": {"rpm": 7}, "quota": {"tokens": 1000,
                                                                   "period": "total"}})
    assert status == 200 and patched["limits"]["rpm"] == 7

    async def patched_in_force() -> bool:
        st, h, _ = await chat(gw, secret)
        return st == 200 and h.get("x-ratelimit-limit-requests") == "7"

    await eventually(patched_in_force, 1.5, "PATCH in force")
    # DELETE: 204, then the key stops working
    r = await gw.delete("/admin/keys/dyn", headers=auth(MASTER))
    assert r.status == 204

    async def revoked() -> bool:
        return (await chat(gw, secret))[0] == 401

    await eventually(revoked, 1.5, "DELETE in force")
    status, listed = await admin(gw, "GET", "/admin/keys")
    assert [k["revoked"] for k in listed["data"] if k["id"] == "dyn"] == [True]


async def test_admin_errors(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    assert (await admin(gw, "GET", "/admin/keys", key=KEY_FREE))[0] == 403
    assert (await admin(gw, "POST", "/admin/keys", {"team": "x"}, key=KEY_FREE))[0] == 403
    assert (await admin(gw, "GET", "/admin/usage", key=KEY_FREE))[0] == 403
    assert (await admin(gw, "GET", "/admin/keys/nope"))[0] == 404
    status, err = await admin(gw, "POST", "/admin/keys", {"team": "x", "limits": {"rpm": -1}})
    assert status == 400 and err["error"]["message"]
    status, created = await admin(gw, "POST", "/admin/keys",
                                  {"id": "old", "expires_at": "2001-01-01T00:00:00Z"})
    assert status == 201 and created["expires_at"] == 978307200
    assert (await chat(gw, created["key"]))[0] == 401  # expired: unusable
    status, err = await admin(gw, "POST", "/admin/keys", {"id": "dup"})
    assert status == 201
    status, err = await admin(gw, "POST", "/admin/keys", {"id": "dup"})
    assert status == 400 and err["error"]["code"] == "duplicate_key_id"


async def test_key_with_no_models_shows_an_empty_list(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    status, created = await admin(gw, "POST", "/admin/keys", {"id": "none", "models": []})
    assert status == 201 and created["models"] == []
    assert (await chat(gw, created["key"]))[0] == 403
    info = await (await gw.get("/v1/key", headers=auth(created["key"]))).json()
    assert info["models"] == []  # not null, which would mean every route
