"""The status page at `/` (and `/ui`): routes, providers and their health, today's usage by team.

Server-rendered HTML (works without JavaScript) that refreshes itself from `/status.json`. It
shows no keys, users or prompts: only the config's names and aggregate numbers.
"""
from __future__ import annotations

import html
import time
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.http.keys import RESOURCES, STATE
from gateway.metrics import provider_health
from gateway.types import dumps

_TEMPLATE = resources.files("gateway.http").joinpath("status.html").read_text(encoding="utf-8")


async def status_data(app: web.Application) -> dict[str, Any]:
    svc = app[STATE].services
    res = app[RESOURCES]
    health = provider_health(svc.routes, res.balancer)  # the same rule as `provider_up`
    providers = [{"name": name, "adapter": spec.adapter, "up": health[name],
                  "configured": bool(spec.api_key) or not spec.key_required}
                 for name, spec in svc.routes.providers.items()]
    routes = []
    for rid, rc in svc.cfg.routes.items():
        if rc.alias is not None:
            routes.append({"id": rid, "alias": rc.alias, "targets": [], "fallbacks": []})
            continue
        targets = []
        for t in rc.targets:
            up: bool | None = None  # a wildcard's concrete models vary: unknown here
            if t.model or not rid.endswith("/*"):
                up = res.balancer.is_up(_target_key(svc, rid, t.provider, t.model))
            targets.append({"provider": t.provider, "model": t.model or "*", "weight": t.weight,
                            "up": up})
        routes.append({"id": rid, "targets": targets, "fallbacks": list(rc.fallbacks),
                       "strategy": rc.strategy})
    usage = await _usage_today(res)
    return {"time": int(time.time()), "routes": routes, "providers": providers,
            "usage_by_team": usage}


def _target_key(svc: Any, rid: str, provider: str, model: str) -> Any:
    from gateway.types import Target

    return Target(provider=svc.routes.providers[provider], model=model or rid.split("/", 1)[-1])


async def _usage_today(res: Any) -> list[dict[str, Any]]:
    store = res.usage_store
    if store is None:
        return []
    from datetime import datetime, timezone

    from gateway.accounting.query import query

    now = datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        return await query(store, start=start, end=now, group_by=["team"])
    except Exception:  # the page must render even while the store is down
        return []


def _render(data: dict[str, Any]) -> str:
    e = html.escape
    prov = "".join(
        f'<tr><td>{e(p["name"])}</td><td>{e(p["adapter"])}</td>'
        f'<td class="{"up" if p["up"] else "down"}">{"up" if p["up"] else "down"}</td>'
        f'<td>{"yes" if p["configured"] else "no key"}</td></tr>' for p in data["providers"])
    rts = "".join(
        f'<tr><td>{e(r["id"])}</td><td>' + (f'alias of {e(r["alias"])}' if r.get("alias") else
        ", ".join(f'{e(t["provider"])}:{e(t["model"])}' + ("" if t["up"] is not False else
                  ' <span class="down">(cooling down)</span>') for t in r["targets"])) +
        f'</td><td>{e(", ".join(r["fallbacks"]))}</td></tr>' for r in data["routes"])
    use = "".join(
        f'<tr><td>{e(str(u.get("team") or "-"))}</td><td>{u["requests"]}</td>'
        f'<td>{u["total_tokens"]}</td><td>{u["cost_usd"]:.4f}</td></tr>'
        for u in data["usage_by_team"]) or '<tr><td colspan="4">no requests today</td></tr>'
    return _TEMPLATE.replace("{{providers}}", prov).replace("{{routes}}", rts) \
        .replace("{{usage}}", use)


async def page(request: web.Request) -> web.Response:
    body = _render(await status_data(request.app))
    return web.Response(text=body, content_type="text/html")


async def data(request: web.Request) -> web.Response:
    return web.Response(body=dumps(await status_data(request.app)),
                        content_type="application/json")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/", page)
    r.add_get("/ui", page)
    r.add_get("/status.json", data)
