"""Record usage → reconcile: the end of every request, whatever happened to it.

`Recorder.finish()` runs once per client request (from the pipeline's `finally`, or when a stream
relay ends): it prices the usage, updates metrics, hands the record to the usage sink (which never
blocks), schedules the limit reconcile off the response path, keeps the trace when asked, and
writes the access-log line.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.accounting.cost import cost_usd
from gateway.accounting.record import UsageRecord
from gateway.errors import GatewayError, RateLimited, QuotaExceeded
from gateway.logs import AccessWriter
from gateway.types import Usage

access_log = logging.getLogger("modelyard.access")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecState:
    record: UsageRecord
    ctx: Any
    route: Any = None
    reservation: Any = None
    call: Any = None
    t_dispatch: float = 0.0
    t_answered: float = 0.0
    t_encoded: float = 0.0
    t_first_byte: float = 0.0
    span: Any = None  # the OpenTelemetry request span, when tracing is on
    inflight: Any = None  # the inflight_requests gauge child, while dispatched

    def mark_dispatch(self) -> None:
        self.t_dispatch = time.perf_counter()

    def mark_answered(self) -> None:
        self.t_answered = time.perf_counter()

    def mark_encoded(self) -> None:
        self.t_encoded = time.perf_counter()

    def mark_first_byte(self) -> None:
        self.t_first_byte = time.perf_counter()

    def take_usage(self, u: Usage | None) -> None:
        if u is None:
            return
        r = self.record
        r.prompt_tokens, r.completion_tokens = u.prompt_tokens, u.completion_tokens
        r.cached_tokens, r.reasoning_tokens = u.cached_tokens, u.reasoning_tokens

    def failed(self, exc: GatewayError) -> None:
        self.record.status = exc.status
        self.record.error_type = exc.code or exc.type
        scope = limit_scope(exc)
        if scope is not None:
            self.record.extra["limit_scope"] = scope


class Recorder:
    def __init__(self, res: Any, *, trace_ttl_s: float, access: bool = True) -> None:
        self.res = res  # gateway.services.Resources: sink, limits and traces appear at start-up
        self.metrics = res.metrics
        self.trace_ttl_s = trace_ttl_s
        self.access = access
        self._tasks: set[asyncio.Task[Any]] = set()
        self._access_line = AccessWriter(access_log)

    def dispatching(self, st: RecState) -> None:
        """The request is about to reach upstream: count it in flight."""
        route = st.route
        st.inflight = self.metrics.inflight(self.metrics.model_label(st.record.model,
                                                                     route.wildcard))
        st.inflight.inc()

    def begin(self, record: UsageRecord, ctx: Any) -> RecState:
        st = RecState(record, ctx)
        tracing = self.res.tracing
        if tracing is not None:
            st.span = tracing.start_request(record.endpoint, ctx.trace_headers or {})
        return st

    def finish(self, st: RecState) -> None:
        try:
            self._finish(st)
        except Exception:  # accounting must never turn a served request into an error
            log.exception("recording a finished request failed")

    def _finish(self, st: RecState) -> None:
        r = st.record
        if st.inflight is not None:
            st.inflight.dec()
        now = time.perf_counter()
        r.latency_ms = (now - st.ctx.t0) * 1000
        call = st.call
        if call is not None:
            r.attempts = len(call.attempts)
        if st.t_first_byte:
            r.ttft_ms = (st.t_first_byte - st.ctx.t0) * 1000
        elif st.t_answered and not r.stream:
            r.ttft_ms = (st.t_answered - st.ctx.t0) * 1000
        route = st.route
        price = route.price if route is not None else None
        r.cost_usd, r.priced = cost_usd(price, r.prompt_tokens, r.completion_tokens,
                                        r.cached_tokens)
        self._metrics(st, now)
        res = self.res
        if res.sink is not None:
            res.sink.submit(r)
        if st.reservation is not None and st.reservation.handle is not None:
            res.limits.reconcile(st.reservation, r.total_tokens, r.cost_usd)
        if st.call is not None and st.call.held:  # provider-account reservations, per attempt
            last = len(st.call.held) - 1
            for i, held in enumerate(st.call.held):
                if held is not None:  # only the attempt that answered used real tokens
                    res.limits.reconcile_handle(held, r.total_tokens if i == last else 0)
        if st.ctx.trace and res.traces is not None:
            self._spawn(res.traces.put(st.ctx.request_id, r.key_id, self._trace(st),
                                       self.trace_ttl_s))
        if self.access:
            self._access(st)
        if st.span is not None:
            res.tracing.end_request(st.span, r)

    def _metrics(self, st: RecState, now: float) -> None:
        m = self.metrics
        r = st.record
        route = st.route
        model = m.model_label(r.model or "none", bool(route and route.wildcard)) if route else "none"
        provider = r.provider or "none"
        overhead = None
        if st.t_dispatch and st.t_answered:
            end = st.t_encoded or st.t_first_byte or st.t_answered
            overhead = (st.t_dispatch - st.ctx.t0) + (end - st.t_answered)
        ttft = r.ttft_ms / 1000 if r.ttft_ms is not None and r.provider else None
        team = m.team_label(r.team)
        m.finished(model, provider, r.status, team, now - st.ctx.t0, overhead, ttft,
                   (r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens),
                   r.cost_usd)
        if r.status == 429 and not r.provider:
            scope = r.extra.get("limit_scope", "key")
            m.rate_limited(scope, team)

    def _trace(self, st: RecState) -> dict[str, Any]:
        r = st.record
        return {
            "request_id": st.ctx.request_id, "model": r.model, "status": r.status,
            "provider": r.provider or None, "upstream_model": r.upstream_model or None,
            "fallback": r.fallback or None, "stream": r.stream,
            "attempts": [a.to_json() for a in st.call.attempts] if st.call else [],
            "retries": st.call.retries if st.call else 0,
            "usage": {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                      "total_tokens": r.total_tokens, "cached_tokens": r.cached_tokens,
                      "reasoning_tokens": r.reasoning_tokens},
            "cost_usd": r.cost_usd, "latency_ms": round(r.latency_ms, 2),
            "ttft_ms": round(r.ttft_ms, 2) if r.ttft_ms is not None else None,
            "error": r.error_type or None, "cut": r.cut or None, "ts": r.ts,
        }

    def _access(self, st: RecState) -> None:
        r = st.record
        fields = {
            "request_id": st.ctx.request_id, "key_id": r.key_id, "team": r.team, "model": r.model,
            "provider": r.provider, "upstream_model": r.upstream_model, "status": r.status,
            "stream": r.stream, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "total_tokens": r.total_tokens,
            "cost_usd": round(r.cost_usd, 8), "latency_ms": round(r.latency_ms, 2),
            "attempts": r.attempts, "fallback": r.fallback or None, "error": r.error_type or None,
            "cut": r.cut or None}
        self._access_line.write(fields)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        self._access_line.flush()
        self.metrics.flush()  # the samples held for the current loop iteration
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def limit_scope(exc: GatewayError) -> str | None:
    if isinstance(exc, RateLimited):
        return exc.scope
    if isinstance(exc, QuotaExceeded):
        return "quota"
    return None
