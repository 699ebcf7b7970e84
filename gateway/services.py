"""One config generation's resources, built from a `GatewayConfig`.

A hot reload builds a new `Services` and swaps it in; requests in flight keep the one they started
with. Long-lived resources (HTTP sessions, Redis, usage sink) live in `Resources` and outlive
generations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Authenticator
from gateway.balancer import Balancer
from gateway.config.schema import GatewayConfig
from gateway.dispatch import Dispatcher
from gateway.limiting import NullLimiter
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.recording import Recorder
from gateway.routing import RouteTable
from gateway.upstream import Upstream


@dataclass
class Resources:
    """What outlives a config generation."""

    upstream: Upstream
    balancer: Balancer
    metrics: Metrics
    limits: Any = field(default_factory=NullLimiter)
    sink: Any = None
    traces: Any = None
    keystore: Any = None
    usage_store: Any = None
    recorder: Recorder | None = None
    state: Any = None  # gateway.limits.State
    tracing: Any = None  # gateway.tracing.Tracing when otel.endpoint is set


@dataclass
class Services:
    cfg: GatewayConfig
    routes: RouteTable
    auth: Authenticator
    dispatcher: Dispatcher
    recorder: Recorder
    limits: Any
    res: Resources
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self)


def build_services(cfg: GatewayConfig, res: Resources) -> Services:
    routes = RouteTable(cfg)
    res.balancer.cooldown = cfg.cooldown
    res.metrics.configure(cfg.teams, cfg.metrics.max_models)
    dynamic = res.keystore.principal if res.keystore is not None else None
    auth = Authenticator(cfg.auth, dynamic=dynamic)
    dispatcher = Dispatcher(routes, res.upstream, res.balancer, res.metrics,
                            gate=getattr(res.limits, "provider_gate", None), tracing=res.tracing)
    if res.recorder is None:
        res.recorder = Recorder(res, trace_ttl_s=cfg.traces.ttl_s, access=cfg.logging.access_log)
    else:
        res.recorder.trace_ttl_s, res.recorder.access = cfg.traces.ttl_s, cfg.logging.access_log
    if hasattr(res.limits, "teams"):
        res.limits.teams = cfg.teams
    return Services(cfg=cfg, routes=routes, auth=auth, dispatcher=dispatcher,
                    recorder=res.recorder, limits=res.limits, res=res)
