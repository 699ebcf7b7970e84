"""Lifecycle state: readiness, hot reload (SIGHUP and file changes) and provider health gauges."""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, load_config
from gateway.config.schema import GatewayConfig
from gateway.metrics import CONFIG_RELOADS

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 1.0


def _fingerprint(path: Path) -> tuple[str, float, int] | None:
    """Changes when the file's content does, including a ConfigMap's `..data` symlink swap."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_mtime, st.st_size


class AppState:
    def __init__(self, app: Any, cfg: GatewayConfig, path: Path | None, max_body: int) -> None:
        self.app = app
        self.cfg = cfg
        self.path = path
        self.max_body = max_body
        self.ready = False
        self.redis_ok = True  # set by the state backend's health hook
        self._seen = _fingerprint(path) if path else None

    def not_ready_reason(self) -> str:
        if not self.ready:
            return "starting or shutting down"
        if self.cfg.state.redis_url and self.cfg.state.on_redis_error == "closed" \
                and not self.redis_ok:
            return "Redis is unreachable and state.on_redis_error is 'closed'"
        return ""

    def rebuild(self) -> None:
        """Rebuild this generation's services (after the state resources started)."""
        from gateway.http.keys import RESOURCES, SERVICES
        from gateway.services import build_services

        self.app[SERVICES] = build_services(self.cfg, self.app[RESOURCES])

    def reload(self) -> bool:
        """Validate the file again and swap it in; a bad config is refused and the old one stays."""
        from gateway.http.keys import RESOURCES, SERVICES
        from gateway.services import build_services

        if self.path is None:
            return False
        self._seen = _fingerprint(self.path)
        try:
            cfg = load_config(self.path)
        except ConfigError as exc:
            CONFIG_RELOADS.labels("error").inc()
            log.error("config reload refused; the previous config keeps serving",
                      extra={"problems": exc.problems})
            return False
        res = self.app[RESOURCES]
        svc = build_services(cfg, res)
        retired = res.upstream.update(svc.routes.providers)
        self.app[SERVICES] = svc  # in-flight requests keep the generation they started with
        self.cfg = cfg
        for session in retired:  # close retired sessions once their requests had time to end
            asyncio.get_running_loop().call_later(
                cfg.server.shutdown_grace_s, lambda s=session: asyncio.ensure_future(s.close()))
        CONFIG_RELOADS.labels("ok").inc()
        log.info("config reloaded", extra={"routes": len(cfg.routes)})
        return True

    async def watch_config(self) -> None:
        if self.path is None:
            return
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            fp = _fingerprint(self.path)
            if fp is not None and fp != self._seen:
                self.reload()

    async def health_loop(self) -> None:
        """Keep `provider_up` current: 1 while any of a provider's targets is in rotation."""
        from gateway.http.keys import RESOURCES, SERVICES

        while True:
            svc = self.app[SERVICES]
            res = self.app[RESOURCES]
            up: dict[str, bool] = {name: False for name in svc.routes.providers}
            for rid in svc.routes.listed_models():
                try:
                    targets = svc.routes.resolve(rid).targets
                except Exception:
                    continue
                for t in targets:
                    up[t.provider.name] = up.get(t.provider.name, False) or res.balancer.is_up(t)
            for name, ok in up.items():
                res.metrics.provider_up(name, ok)
            await asyncio.sleep(1.0)
