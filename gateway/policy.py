"""Retries and timeouts for one target of one route: the route's, then its provider's, then the
global settings (`retries`, `timeouts` in the config), resolved once and cached."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import GatewayConfig, Retries, RouteConfig, Timeouts
from gateway.routing import Route
from gateway.types import Target

CONNECT_S, FIRST_TOKEN_S = 5.0, 60.0
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Policy:
    retries: Retries
    connect_s: float
    first_token_s: float


class Policies:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, dict[str, Policy]] = {}

    def of(self, route: Route, target: Target) -> Policy:
        per_route = self._cache.get(route.id)
        if per_route is None:
            per_route = {}
            if len(self._cache) < _CACHE_MAX:
                self._cache[route.id] = per_route
        policy = per_route.get(target.provider.name)
        if policy is None:
            policy = per_route[target.provider.name] = self._make(route, target)
        return policy

    def _make(self, route: Route, target: Target) -> Policy:
        cfg = self.cfg
        rc = route_config(cfg.routes, route)
        pc = cfg.providers.get(target.provider.name)
        p_timeouts = None
        if pc is not None:
            p_timeouts = pc.timeouts or (Timeouts(total_s=pc.timeout_s) if pc.timeout_s else None)
        layers = [cfg.timeouts, p_timeouts, rc.timeouts if rc is not None else None]
        connect = _pick(layers, "connect_s") or CONNECT_S
        first = _pick(layers, "first_token_s") or FIRST_TOKEN_S
        retries = ((rc.retries if rc is not None else None)
                   or (pc.retries if pc is not None else None) or route.retries)
        return Policy(retries, connect, first)


def _pick(layers: list[Timeouts | None], name: str) -> float | None:
    value = None
    for layer in layers:
        if layer is not None and getattr(layer, name) is not None:
            value = getattr(layer, name)
    return value


def route_config(routes: dict[str, RouteConfig], route: Route) -> RouteConfig | None:
    """The config entry a built route came from (a wildcard route's ID is the concrete model)."""
    if not route.wildcard:
        return routes.get(route.id)
    best = ""
    for rid in routes:
        if rid.endswith("/*") and route.id.startswith(rid[:-1]) and len(rid) > len(best):
            best = rid
    return routes.get(best) if best else None
