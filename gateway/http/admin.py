"""Admin and per-key endpoints: /admin/keys, /admin/usage, /v1/key, /v1/traces/{request_id}."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.accounting.query import key_spend, parse_usage_params
from gateway.auth import Principal
from gateway.errors import InvalidRequest, NotFound
from gateway.http.handlers import read_json
from gateway.http.keys import RESOURCES, STATE
from gateway.limits.spec import effective_remaining
from gateway.types import dumps

_JSON = "application/json"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(data), content_type=_JSON)


async def _principal(request: web.Request) -> Principal:
    return await request.app[STATE].services.auth.authenticate(request.headers)  # type: ignore[no-any-return]


async def _master(request: web.Request) -> Any:
    svc = request.app[STATE].services
    svc.auth.master(await svc.auth.authenticate(request.headers))
    return request.app[RESOURCES].state.keys


async def create_key(request: web.Request) -> web.Response:
    store = await _master(request)
    body, _ = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", param="body")
    rec, secret = await store.create(body)
    return _json({**rec.public(), "key": secret}, 201)


async def list_keys(request: web.Request) -> web.Response:
    store = await _master(request)
    return _json({"object": "list", "data": [r.public() for r in await store.list()]})


async def get_key(request: web.Request) -> web.Response:
    store = await _master(request)
    rec = await store.get(request.match_info["key_id"])
    if rec is None:
        raise NotFound(f"no key with id '{request.match_info['key_id']}'", param="id")
    return _json(rec.public())


async def patch_key(request: web.Request) -> web.Response:
    store = await _master(request)
    body, _ = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", param="body")
    rec = await store.patch(request.match_info["key_id"], body)
    return _json(rec.public())


async def delete_key(request: web.Request) -> web.Response:
    store = await _master(request)
    await store.revoke(request.match_info["key_id"])  # kept, marked revoked, for the record
    return web.Response(status=204)


async def usage(request: web.Request) -> web.Response:
    await _master(request)
    q = parse_usage_params(request.query)
    store = request.app[RESOURCES].usage_store
    await request.app[RESOURCES].sink.flush(timeout_s=2.0)  # include what is still buffered
    return _json({"object": "list", "data": await q.run(store)})


def _limits_json(lim: Any) -> Any:
    return None if lim is None else {"rpm": lim.rpm, "tpm": lim.tpm}


async def my_key(request: web.Request) -> web.Response:
    """The key's own view. `quota`, `usage` and `remaining` are the key's own quota (as they
    always were); `quotas` lists every quota that binds the key (its own and its team's) with
    what is used and left in the current period, read from the limiter's state backend, and
    `effective_remaining` is the tightest of them: what is left before `insufficient_quota`.
    `degraded` is true when Redis is unreachable (`on_redis_error: open`) and those numbers are
    this replica's own counts since the outage began."""
    p = await _principal(request)
    res = request.app[RESOURCES]
    quota = p.quota
    out: dict[str, Any] = {
        "id": p.key_id, "team": p.team or None,
        "models": list(p.models) if p.models is not None else None,  # []: no model at all
        "limits": _limits_json(p.limits),
        "quota": None if quota is None else {"tokens": quota.tokens, "usd": quota.usd,
                                             "period": quota.period},
        "expires_at": p.expires_at,
    }
    checks = res.limits.quota_checks(p)  # the key's (when capped), then its team's
    backend = res.state.limits
    usages = await backend.usage(checks) if checks else []
    # Redis unreachable with `on_redis_error: open`: the quota numbers are this replica's own
    # counts since the outage began, not the shared ones
    out["degraded"] = bool(checks) and not getattr(backend, "up", True)
    own = next((u for u in usages if u.scope == "key"), None)
    remaining: dict[str, Any] = {"tokens": None, "usd": None}
    if own is not None:
        own.fill_remaining()
        spend = {"requests": own.requests, "tokens": own.tokens,
                 "cost_usd": round(own.cost_usd, 10), "period": own.period,
                 "period_key": own.period_key}
        remaining = {"tokens": own.remaining_tokens, "usd": own.remaining_usd}
    else:  # no quota of its own (or one that caps nothing): the spend store's record
        period = quota.period if quota is not None else "total"
        await res.sink.flush(timeout_s=2.0)
        spent = await key_spend(res.usage_store, p.key_id, period)
        spend = {"requests": spent["requests"], "tokens": spent["tokens"],
                 "cost_usd": spent["cost_usd"], "period": period}
    out["usage"] = spend
    out["remaining"] = remaining
    out["quotas"] = [u.public() for u in usages]
    out["effective_remaining"] = effective_remaining(usages)
    return _json(out)


async def trace(request: web.Request) -> web.Response:
    p = await _principal(request)
    rid = request.match_info["request_id"]
    found = await request.app[RESOURCES].traces.get(rid, p.key_id)
    if found is None:
        raise NotFound(f"no trace for request '{rid}' (traces are kept for requests sent with "
                       f"observability: true, for traces.ttl_s, and only for the same key)",
                       param="request_id")
    return _json(found)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/admin/keys", create_key)
    r.add_get("/admin/keys", list_keys)
    r.add_get("/admin/keys/{key_id}", get_key)
    r.add_patch("/admin/keys/{key_id}", patch_key)
    r.add_delete("/admin/keys/{key_id}", delete_key)
    r.add_get("/admin/usage", usage)
    r.add_get("/v1/key", my_key)
    r.add_get("/v1/traces/{request_id}", trace)
