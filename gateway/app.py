"""`create_app(config)`: routes, middlewares and one `cleanup_ctx` entry per resource. No logic."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, AsyncIterator

from aiohttp import web

from gateway.balancer import Balancer
from gateway.config.schema import GatewayConfig
from gateway.http import admin, handlers, status_page
from gateway.http.keys import RESOURCES, STATE
from gateway.http.middleware import request_id_and_errors
from gateway.lifecycle import AppState
from gateway.metrics import Metrics
from gateway.services import Resources, build_services
from gateway.state import state_resources
from gateway.tracing import create_tracing
from gateway.upstream import Upstream

log = logging.getLogger(__name__)
MiB = 1024 * 1024


def create_app(cfg: GatewayConfig, config_path: str | Path | None = None,
               *, serve_metrics: bool | None = None) -> web.Application:
    max_body = int(cfg.server.max_body_mb * MiB)
    app = web.Application(middlewares=[request_id_and_errors], client_max_size=max_body)
    routes = _routes_of(cfg)
    res = Resources(upstream=Upstream(routes.providers), balancer=Balancer(cfg.cooldown),
                    metrics=Metrics(cfg.teams, cfg.metrics.max_models))
    res.tracing = create_tracing(cfg.otel.endpoint, cfg.otel.service_name)
    app[RESOURCES] = res
    app[STATE] = AppState(app, cfg, Path(config_path) if config_path else None, max_body)
    app[STATE].services = build_services(cfg, res)

    r = app.router
    r.add_post("/v1/chat/completions", handlers.chat_completions)
    r.add_post("/chat/completions", handlers.chat_completions)
    r.add_post("/v1/embeddings", handlers.embeddings)
    r.add_get("/v1/models", handlers.models)
    r.add_get("/healthz", handlers.healthz)
    r.add_get("/readyz", handlers.readyz)
    admin.add_routes(r)
    status_page.add_routes(r)
    if serve_metrics if serve_metrics is not None else cfg.server.metrics_port is None:
        r.add_get("/metrics", handlers.metrics)

    app.cleanup_ctx.append(_upstream_sessions)
    app.cleanup_ctx.append(state_resources)
    app.cleanup_ctx.append(_lifecycle)
    return app


def _routes_of(cfg: GatewayConfig) -> Any:
    from gateway.routing import RouteTable

    return RouteTable(cfg)


async def _upstream_sessions(app: web.Application) -> AsyncIterator[None]:
    res = app[RESOURCES]
    await res.upstream.start()
    yield
    await res.upstream.close()
    if res.tracing is not None:
        await asyncio.get_running_loop().run_in_executor(None, res.tracing.shutdown)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Readiness, the config-file watcher and the provider health gauge refresher."""
    state: AppState = app[STATE]
    tasks = [asyncio.create_task(state.watch_config()), asyncio.create_task(state.health_loop())]
    state.ready = True
    yield
    state.ready = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    recorder = app[RESOURCES].recorder
    if recorder is not None:
        await recorder.drain()
