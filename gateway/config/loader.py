"""YAML → `${VAR}` expansion → strict typed decode → cross-checks → one frozen `GatewayConfig`.

`load_config(path)` raises `ConfigError` listing every problem at once, each with its path in the
file (`routes."openai/gpt-4o".targets[0].provider: unknown provider 'opneai'`).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Container, Mapping
from urllib.parse import parse_qsl, urlsplit

import yaml

from gateway.config.decode import EnvValue, decode, decode_dataclass, fmt_path
from gateway.accounting.cost import Price, lookup_price
from gateway.config.schema import GatewayConfig, RouteConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# config/prices.yaml, shipped inside the package too (gateway/config/prices.yaml links to it)
SHIPPED_PRICES = Path(__file__).resolve().parent / "prices.yaml"


class ConfigError(Exception):
    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        head = f"invalid config {source}".strip()
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def expand_env(node: Any, path: str, env: Mapping[str, str], errors: list[str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string, with shell meaning.

    `${VAR}` is the variable's value (empty when it is set but empty) and an error naming the
    variable when it is unset; `${VAR:-default}` gives `default` when it is unset or empty.
    A scalar that is exactly one reference becomes an `EnvValue`, read by its field's type
    (`port: ${PORT}` gives an integer, `api_key: ${KEY}` stays the exact string).
    """
    if isinstance(node, dict):
        return {k: expand_env(v, fmt_path(path, str(k)), env, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, fmt_path(path, i), env, errors) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is None:
            errors.append(f"{path}: environment variable {name} is not set")
        return ""

    out = _VAR.sub(sub, node)
    return EnvValue(out) if _VAR.fullmatch(node) is not None else out


def wildcard_route(model_id: str, routes: Container[str]) -> str | None:
    """The longest `prefix/*` in `routes` that matches `model_id` with a non-empty rest."""
    parts = model_id.split("/")
    for k in range(len(parts) - 1, 0, -1):
        wid = "/".join(parts[:k]) + "/*"
        if wid in routes and "/".join(parts[k:]):
            return wid
    return None


def parse_config(text: str, *, source: str = "", env: Mapping[str, str] | None = None,
                 base_dir: Path | None = None) -> GatewayConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"YAML syntax: {exc}"], source) from None
    if not isinstance(data, dict):
        raise ConfigError(["config: the top level must be a mapping"], source)
    errors: list[str] = []
    data = expand_env(data, "", os.environ if env is None else env, errors)
    cfg: GatewayConfig = decode_dataclass(GatewayConfig, data, "", errors)
    if cfg is None:
        raise ConfigError(errors, source)
    prices = _load_prices(cfg, base_dir, errors)
    cfg = _resolve_prices(cfg, prices, errors)
    errors += cross_check(cfg)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror}"], str(p)) from None
    return parse_config(text, source=str(p), env=env, base_dir=p.resolve().parent)


def _load_prices(cfg: GatewayConfig, base_dir: Path | None, errors: list[str]) -> dict[str, Price]:
    """The prices file (shipped table unless `prices_file`), with inline `prices:` on top."""
    path = Path(cfg.prices_file) if cfg.prices_file else SHIPPED_PRICES
    if not path.is_absolute() and base_dir is not None and cfg.prices_file:
        path = base_dir / path
    table: Any = {}
    if cfg.prices_file or path.exists():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            table = data.get("prices", data) if isinstance(data, dict) else {}
        except (OSError, yaml.YAMLError) as exc:
            errors.append(f"prices_file: cannot load {path}: {exc}")
    out = decode(dict[str, Price], table, "prices_file", errors)
    return {**(out if isinstance(out, dict) else {}), **cfg.prices}


def _resolve_prices(cfg: GatewayConfig, prices: dict[str, Price], errors: list[str]) -> GatewayConfig:
    routes: dict[str, RouteConfig] = {}
    for rid, route in cfg.routes.items():
        if isinstance(route.price, str) and route.price != "auto":
            price = lookup_price(prices, route.price)
            if price is None:
                errors.append(f"{fmt_path(fmt_path('routes', rid), 'price')}: "
                              f"no price named {route.price!r} in the prices file")
            route = dataclasses.replace(route, price=price)
        routes[rid] = route
    return dataclasses.replace(cfg, routes=routes, prices=prices)


def _resolves(cfg: GatewayConfig, model_id: str) -> str | None:
    """The route ID `model_id` lands on (following aliases), or None. Cycles return None."""
    seen: set[str] = set()
    current = model_id
    while current not in seen:
        seen.add(current)
        route = cfg.routes.get(current)
        if route is None:
            return wildcard_route(current, cfg.routes)
        if route.alias is None:
            return current
        current = route.alias
    return None


def cross_check(cfg: GatewayConfig) -> list[str]:
    errors: list[str] = []
    for rid, route in cfg.routes.items():
        rpath = fmt_path("routes", rid)
        if "*" in rid and not (rid.endswith("/*") and rid.count("*") == 1):
            errors.append(f"{rpath}: a wildcard route must look like 'vendor/*'")
        for i, t in enumerate(route.targets):
            if t is None or t.provider is None:
                continue  # already reported by the decoder
            if t.provider not in cfg.providers:
                errors.append(f"{fmt_path(rpath, 'targets')}[{i}].provider: "
                              f"unknown provider {t.provider!r}")
            elif not t.model and "/" not in rid:
                errors.append(f"{fmt_path(rpath, 'targets')}[{i}].model: required when the "
                              f"route ID has no 'vendor/' prefix")
        if route.alias is not None:
            errors += _check_alias(cfg, rid, rpath)
        for kind in ("fallbacks", "context_fallbacks"):
            for i, fb in enumerate(getattr(route, kind)):
                if _resolves(cfg, fb) is None:
                    errors.append(f"{fmt_path(rpath, kind)}[{i}]: no route for model {fb!r}")
                elif _resolves(cfg, fb) == _resolves(cfg, rid):
                    errors.append(f"{fmt_path(rpath, kind)}[{i}]: a route cannot fall back to itself")
    if cfg.default_model and _resolves(cfg, cfg.default_model) is None:
        errors.append(f"default_model: no route for model {cfg.default_model!r}")
    ids = [k.id for k in cfg.auth.keys]
    for i, kid in enumerate(ids):
        if kid in ids[:i]:
            errors.append(f"auth.keys[{i}].id: duplicate key id {kid!r}")
    if cfg.server.workers > 1 and not cfg.state.redis_url:
        errors.append("server.workers: more than one worker needs state.redis_url "
                      "(limits must stay exact across processes)")
    if cfg.state.redis_url:
        errors += [f"state.redis_url: {p}" for p in redis_url_problems(cfg.state.redis_url)]
    return errors


_CERT_REQS = ("none", "optional", "required")
_BOOLS = ("0", "1", "true", "false", "yes", "no")
_BOOL_PARAMS = ("ssl_check_hostname", "ssl_validate_ocsp", "ssl_validate_ocsp_stapled",
                "socket_keepalive", "retry_on_timeout", "legacy_responses", "cluster")
_ENCODE = "percent-encode the reserved characters / ? # @ : % of a password (or user name)"


def redis_url_problems(url: str) -> list[str]:
    """What redis-py would reject or silently misread in a Redis URL, found before start-up
    (a bad value otherwise shows up as a Redis outage that never ends). No message quotes any
    part of the URL: a password with a reserved character shifts the parts around, so the
    host, path or port seen here may be a piece of it."""
    from redis.connection import parse_url

    from gateway.limits.connection import split_cluster_url

    if "://" not in url:
        return ["the URL must start with redis://, rediss://, unix:// (or redis+cluster://, "
                "rediss+cluster://)"]
    parts = urlsplit(url)
    scheme = parts.scheme.removesuffix("+cluster")
    if scheme not in ("redis", "rediss", "unix"):
        return ["the scheme must be redis://, rediss://, unix:// (or redis+cluster://, "
                "rediss+cluster://)"]
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment or parts.fragment:
        return [f"the URL has parts after the host that look like a password's: {_ENCODE}"]
    out: list[str] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "ssl_cert_reqs" and value not in _CERT_REQS:
            out.append(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
        elif name in _BOOL_PARAMS and value.lower() not in _BOOLS and value != "":
            out.append(f"{name} must be one of {', '.join(_BOOLS)}")
    if scheme != "unix":
        db = parts.path.strip("/")
        if db and not db.isdigit():
            out.append("the database in the path must be a number (e.g. /0)")
        try:
            parts.port
        except ValueError:
            return [f"the port is not a number ({_ENCODE})"]
    plain, cluster = split_cluster_url(url)
    if cluster and scheme == "unix":
        out.append("a cluster is not reached through a unix socket")
    if not out:
        try:
            parse_url(plain)
        except ValueError:
            out.append(f"redis-py cannot read the URL ({_ENCODE})")
    return out


def _check_alias(cfg: GatewayConfig, rid: str, rpath: str) -> list[str]:
    chain = [rid]
    current = cfg.routes[rid].alias
    while current is not None:
        if current in chain:
            return [f"{fmt_path(rpath, 'alias')}: alias cycle {' -> '.join(chain + [current])}"]
        chain.append(current)
        route = cfg.routes.get(current)
        if route is None:
            if _resolves(cfg, current) is None:
                return [f"{fmt_path(rpath, 'alias')}: alias to nowhere: no route for {current!r}"]
            return []
        current = route.alias
    return []
