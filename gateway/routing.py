"""Model ID → route → targets. No I/O.

Resolution order: alias → exact route → the longest matching `vendor/*` wildcard →
`ModelNotFound` (whose message lists close matches).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

from gateway.config.schema import GatewayConfig, Limits, Price, ProviderConfig, RouteConfig  # noqa: F401
from gateway.config.schema import Retries, Timeouts
from gateway.accounting.cost import lookup_price
from gateway.config.loader import wildcard_route
from gateway.errors import ModelNotFound
from gateway.types import ProviderSpec, Target

_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Route:
    id: str  # the route's key in the config ("openai/gpt-4o", "anthropic/*")
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()
    context_fallbacks: tuple[str, ...] = ()
    price: Price | None = None
    limits: Limits | None = None
    strategy: str = "weighted"
    retries: Retries = field(default_factory=Retries)
    timeouts: Timeouts = field(default_factory=Timeouts)
    trace_prompts: bool = False
    wildcard: bool = False


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a model ID resolved to: the ID the client sent, the route and its concrete targets."""

    model_id: str
    route: Route

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.route.targets


def provider_spec(name: str, p: ProviderConfig) -> ProviderSpec:
    return ProviderSpec(name=name, adapter=p.adapter, base_url=p.base_url.rstrip("/"),
                        api_key=p.api_key, api_version=p.api_version, auth_header=p.auth_header,
                        headers=dict(p.headers), unsupported_params=frozenset(p.unsupported_params),
                        key_required=p.key_required and p.adapter != "mock", options=dict(p.options))


def _merge_timeouts(*layers: Timeouts | None) -> Timeouts:
    out: dict[str, float | None] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in ("connect_s", "first_token_s", "total_s", "idle_s"):
            value = getattr(layer, name)
            if value is not None:
                out[name] = value
    return Timeouts(**out)


class RouteTable:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.providers = {n: provider_spec(n, p) for n, p in cfg.providers.items()}
        self._aliases = {rid: r.alias for rid, r in cfg.routes.items() if r.alias is not None}
        self._exact: dict[str, RouteConfig] = {}
        self._wild: dict[str, RouteConfig] = {}
        for rid, r in cfg.routes.items():
            if r.alias is None:
                (self._wild if rid.endswith("/*") else self._exact)[rid] = r
        self._cache: dict[str, Resolved] = {}
        self.default_model = cfg.default_model

    # ------------------------------------------------------------ resolution
    def resolve(self, model_id: str) -> Resolved:
        hit = self._cache.get(model_id)
        if hit is not None:
            return hit
        resolved = self._resolve(model_id)
        if len(self._cache) < _CACHE_MAX:
            self._cache[model_id] = resolved
        return resolved

    def _resolve(self, model_id: str) -> Resolved:
        current = model_id
        seen = set()
        while current in self._aliases and current not in seen:
            seen.add(current)
            current = self._aliases[current]
        rc = self._exact.get(current)
        if rc is not None:
            return Resolved(model_id, self._build(current, rc, current))
        wid = wildcard_route(current, self._wild)  # the longest matching `prefix/*`
        if wid is not None:
            return Resolved(model_id, self._build(wid, self._wild[wid], current))
        raise ModelNotFound(self._not_found_message(model_id), param="model")

    def _build(self, rid: str, rc: RouteConfig, concrete: str) -> Route:
        suffix = concrete.split("/", 1)[1] if "/" in concrete else concrete
        provider_retries = None
        targets = []
        provider_timeouts: list[Timeouts | None] = []
        for t in rc.targets:
            pc = self.cfg.providers[t.provider]
            provider_retries = provider_retries or pc.retries
            provider_timeouts.append(pc.timeouts or (Timeouts(total_s=pc.timeout_s)
                                                     if pc.timeout_s else None))
            targets.append(Target(provider=self.providers[t.provider], model=t.model or suffix,
                                  weight=t.weight, defaults=dict(rc.defaults),
                                  drop_unsupported=rc.drop_unsupported))
        price = rc.price if isinstance(rc.price, Price) else None
        if rc.price == "auto":  # priced by the concrete model ID, from the prices table
            price = lookup_price(self.cfg.prices, concrete)
        return Route(
            id=concrete if rid.endswith("/*") else rid, targets=tuple(targets),
            fallbacks=rc.fallbacks, context_fallbacks=rc.context_fallbacks, price=price,
            limits=rc.limits, strategy=rc.strategy,
            retries=rc.retries or provider_retries or self.cfg.retries,
            timeouts=_merge_timeouts(self.cfg.timeouts, *provider_timeouts, rc.timeouts),
            trace_prompts=rc.trace_prompts, wildcard=rid.endswith("/*"),
        )

    # ------------------------------------------------------------ listings
    def listed_models(self) -> list[str]:
        """Aliases, exact routes and wildcard routes' `models`, in config order."""
        out: list[str] = []
        for rid, r in self.cfg.routes.items():
            if rid.endswith("/*"):
                out.extend(r.models)
            else:
                out.append(rid)
        return list(dict.fromkeys(out))

    def _not_found_message(self, model_id: str) -> str:
        known = self.listed_models()
        close = difflib.get_close_matches(model_id, known, n=3, cutoff=0.5)
        msg = f"The model '{model_id}' does not exist or is not routed by this gateway."
        if close:
            msg += " Did you mean: " + ", ".join(close) + "?"
        return msg


def allowed(globs: tuple[str, ...] | None, *ids: str) -> bool:
    """A key may use a route when one of its globs matches any of `ids` (sent ID, route ID)."""
    if globs is None:
        return True
    return any(fnmatch.fnmatchcase(i, g) for g in globs for i in ids)
