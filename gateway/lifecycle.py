"""Lifecycle state: readiness, hot reload (SIGHUP and file changes) and provider health gauges.

A reload validates the file first: a config that does not load or does not build is refused with
an error log line naming the problems and `config_reloads_total{result="error"}`, and the running
generation keeps serving. A good one becomes a new `Services` generation; requests in flight keep
the generation (and the upstream sessions) they started with.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, load_config
from gateway.config.schema import GatewayConfig
from gateway.errors import GatewayError
from gateway.metrics import CONFIG_RELOADS
from gateway.streaming import cut_at_shutdown

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 1.0
HEALTH_INTERVAL_S = 1.0
# Sections read once at start-up (listeners, state backend, usage sink): a reload keeps the
# running values and says that a restart is needed for a change there to take effect.
RESTART_ONLY = ("server", "state", "usage")
DEFAULT_TOTAL_S = 600.0
CUT_WAIT_S = 5.0  # after the grace period: how long cancelled requests get to record and unwind

Fingerprint = tuple[str, int, int, int]


def _fingerprint(path: Path) -> Fingerprint | None:
    """Changes when the file's content does, including a ConfigMap's `..data` symlink swap
    (the real path changes) and an in-place edit (mtime, size or inode changes)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_mtime_ns, st.st_size, st.st_ino


def _longest_request_s(cfg: GatewayConfig) -> float:
    """The longest a request may live: retired upstream sessions stay open at least this long."""
    totals = [cfg.timeouts.total_s or DEFAULT_TOTAL_S]
    totals += [r.timeouts.total_s for r in cfg.routes.values()
               if r.timeouts is not None and r.timeouts.total_s]
    return max(totals)


class AppState:
    def __init__(self, app: Any, cfg: GatewayConfig, path: Path | None, max_body: int) -> None:
        self.app = app
        self.cfg = cfg
        self.services: Any = None  # this config generation's gateway.services.Services
        self.path = path
        self.max_body = max_body
        self.ready = False
        self.stopping = False  # set by SIGTERM/SIGINT: readiness is false from then on
        self.redis_ok = True  # set by the state backend's health hook
        self._seen = _fingerprint(path) if path else None
        self._retired: dict[Any, asyncio.TimerHandle | None] = {}
        self.inflight_tasks: set[asyncio.Task[Any]] = set()

    def not_ready_reason(self) -> str:
        if self.stopping:
            return "shutting down: draining in-flight requests"
        if not self.ready:
            return "starting or shutting down"
        if self.cfg.state.redis_url and self.cfg.state.on_redis_error == "closed" \
                and not self.redis_ok:
            return "Redis is unreachable and state.on_redis_error is 'closed'"
        return ""

    def begin_shutdown(self) -> None:
        """Readiness turns false now, before the listener closes and in-flight requests drain."""
        self.stopping = True
        self.ready = False

    @property
    def inflight(self) -> int:
        return len(self.inflight_tasks)

    def track_requests(self) -> Any:
        """The outermost middleware that keeps each in-flight request's task for the drain."""
        from gateway.http.middleware import tracking

        return tracking(self.inflight_tasks)

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for in-flight requests to end, then cancel the rest and give them
        `CUT_WAIT_S` to unwind. Returns how many were cut.

        They are cancelled through `cut_at_shutdown`, so that they end as cut by the shutdown
        (`cut="shutdown"`, a 503 or a stream's final error event), not as clients that left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.inflight_tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self.inflight_tasks), timeout=left)
        cut = set(self.inflight_tasks)
        if cut:
            log.warning("shutdown grace period over: cutting %d in-flight request(s)", len(cut),
                        extra={"grace_s": grace_s, "cut": len(cut)})
            for task in cut:
                cut_at_shutdown(task)
            await asyncio.wait(cut, timeout=CUT_WAIT_S)
        return len(cut)

    def rebuild(self) -> None:
        """Rebuild this generation's services (after the state resources started)."""
        from gateway.http.keys import RESOURCES
        from gateway.services import build_services

        self.services = build_services(self.cfg, self.app[RESOURCES])

    def reload(self) -> bool:
        """Validate the file again and swap it in; a bad config is refused and the old one stays."""
        if self.path is None:
            return False
        if self.stopping:
            log.info("config reload skipped: shutting down")
            return False
        self._seen = _fingerprint(self.path)
        try:
            cfg = self._keep_restart_only(load_config(self.path))
            self._swap(cfg)
        except ConfigError as exc:
            return self._refused(exc.problems)
        except Exception as exc:  # a config that validates but does not build must not crash us
            log.exception("config reload failed while building the new routing table")
            return self._refused([f"{type(exc).__name__}: {exc}"])
        CONFIG_RELOADS.labels("ok").inc()
        log.info("config reloaded", extra={"routes": len(cfg.routes), "path": str(self.path),
                                           "pid": os.getpid()})
        return True

    def _refused(self, problems: list[str]) -> bool:
        CONFIG_RELOADS.labels("error").inc()
        log.error("config reload refused, the previous config keeps serving: %s",
                  "; ".join(problems),
                  extra={"problems": problems, "path": str(self.path), "pid": os.getpid()})
        return False

    def _keep_restart_only(self, cfg: GatewayConfig) -> GatewayConfig:
        changed = [s for s in RESTART_ONLY if getattr(cfg, s) != getattr(self.cfg, s)]
        if not changed:
            return cfg
        log.warning("config reload: changes to %s take effect on restart only; the running "
                    "values stay", ", ".join(changed), extra={"sections": changed})
        return dataclasses.replace(cfg, **{s: getattr(self.cfg, s) for s in changed})

    def _swap(self, cfg: GatewayConfig) -> None:
        from gateway.http.keys import RESOURCES
        from gateway.services import build_services

        res = self.app[RESOURCES]
        svc = build_services(cfg, res)  # raises before anything is swapped
        retired = res.upstream.update(svc.routes.providers)
        self.services = svc  # in-flight requests keep the generation they started with
        self.cfg = cfg
        self._retire(retired, _longest_request_s(cfg))

    def _retire(self, sessions: list[Any], after_s: float) -> None:
        """Close retired upstream sessions once no request that started on them can be alive
        (their streams would be cut otherwise); `aclose()` closes the rest at shutdown."""
        if not sessions:
            return
        loop = asyncio.get_running_loop()
        for s in sessions:
            self._retired[s] = loop.call_later(after_s, self._close_retired, s)

    def _close_retired(self, session: Any) -> None:
        if self._retired.pop(session, None) is not None:
            asyncio.ensure_future(session.close())

    async def aclose(self) -> None:
        """At shutdown, after in-flight requests ended: close the retired upstream sessions."""
        retired, self._retired = self._retired, {}
        for session, handle in retired.items():
            if handle is not None:
                handle.cancel()
            await session.close()

    async def watch_config(self) -> None:
        """Poll the file's real path, mtime, size and inode; reload when they change."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            fp = _fingerprint(self.path)
            if fp is not None and fp != self._seen and not self.stopping:
                log.info("config file changed", extra={"path": str(self.path)})
                self.reload()

    async def health_loop(self) -> None:
        """Keep `provider_up` (1 while any of a provider's targets is in rotation) and
        `quota_remaining_ratio` (teams with a quota) current."""
        while True:
            try:
                self._refresh_provider_up()
                await self._refresh_quotas()
            except GatewayError as exc:  # Redis down with on_redis_error: closed (said once)
                log.debug("health gauges not refreshed: %s", exc.message)
            except Exception:  # a gauge refresh must never stop the loop
                log.exception("health gauge refresh failed")
            await asyncio.sleep(HEALTH_INTERVAL_S)

    def _refresh_provider_up(self) -> None:
        from gateway.http.keys import RESOURCES
        from gateway.metrics import provider_health

        svc = self.services
        res = self.app[RESOURCES]
        up = {name: True for name in svc.routes.providers}  # nothing says it is failing
        up.update(provider_health(svc.routes, res.balancer))
        for name, ok in up.items():
            res.metrics.provider_up(name, ok)

    async def _refresh_quotas(self) -> None:
        from gateway.http.keys import RESOURCES
        from gateway.limits import QuotaCheck
        from gateway.metrics import remaining_ratio

        res = self.app[RESOURCES]
        state = getattr(res, "state", None)
        checks = [QuotaCheck("team", team, t.quota.tokens, t.quota.usd, t.quota.period)
                  for team, t in self.cfg.teams.items()
                  if t.quota is not None and (t.quota.tokens or t.quota.usd)]
        if state is None or not checks:
            return
        for check, usage in zip(checks, await state.limits.usage(checks)):
            ratio = remaining_ratio(usage)
            if ratio is not None:
                res.metrics.quota_remaining(check.ident, ratio)
