"""The request's story: resolve → authorise → reserve limits → dispatch → record usage → reconcile.

`Pipeline.chat()` and `.embeddings()` return a `Reply` (bytes) or a `StreamReply` (an async
iterator of SSE frames) to the HTTP layer; the usage record is written in a `finally` whatever
happened (success, error, limits, client gone, stream cut) — for streams, when the relay ends.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from gateway.accounting.record import UsageRecord
from gateway.auth import Principal
from gateway.dispatch import Call, Outcome, StreamStart
from gateway.errors import GatewayError
from gateway.recording import Recorder
from gateway.streaming import ChunkEncoder, relay
from gateway.types import ChatRequest, ChatResponse, EmbeddingsResponse, dumps
from gateway.validation import chat_request, embeddings_request

DEFAULT_COMPLETION_ESTIMATE = 1024


@dataclass(slots=True)
class RequestContext:
    request_id: str
    principal: Principal
    t0: float  # time.perf_counter() at arrival
    ts: float  # time.time() at arrival
    body_size: int = 0
    trace: bool = False
    record_id: str = ""  # the gateway's own unique id (request_id may be the client's)
    trace_headers: dict[str, str] | None = None  # incoming W3C traceparent/tracestate
    headers: dict[str, str] = field(default_factory=dict)  # response headers gathered on the way


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class StreamReply:
    headers: dict[str, str]
    frames: AsyncIterator[bytes]


class Pipeline:
    def __init__(self, svc: Any) -> None:
        self.svc = svc  # gateway.services.Services: one config generation's resources

    async def chat(self, ctx: RequestContext, body: Any) -> Reply | StreamReply:
        svc = self.svc
        rec = _record(ctx, "chat")
        if isinstance(body, dict):
            ctx.trace = ctx.trace or body.get("observability") is True
            if isinstance(body.get("user"), str):
                rec.user = body["user"]
        streaming = False
        rec_state = svc.recorder.begin(rec, ctx)
        try:
            req = chat_request(body, svc.routes.default_model)
            rec.model, rec.stream = req.model, req.stream
            resolved = svc.routes.resolve(req.model)
            rec_state.route = resolved.route
            ctx.principal.check_model(req.model, resolved.route.id)
            estimate = ctx.body_size // 4 + (req.max_tokens or _default_max(resolved.route))
            rec_state.reservation = await svc.res.limits.acquire(ctx.principal, resolved.route,
                                                             estimate)
            ctx.headers.update(rec_state.reservation.headers)
            call = Call(req, resolved, ctx.principal.may_use,
                        time.monotonic() + (resolved.route.timeouts.total_s or 600.0))
            rec_state.call = call
            rec_state.mark_dispatch()
            outcome = await svc.dispatcher.run(call)
            rec_state.mark_answered()
            self._outcome_headers(ctx, rec, outcome)
            client_model = outcome.route.id if outcome.fallback_from else req.model
            if isinstance(outcome.result, StreamStart):
                streaming = True
                return self._stream(ctx, rec_state, outcome.result, req, client_model)
            resp: ChatResponse = outcome.result
            rec_state.take_usage(resp.usage)
            resp.body["model"] = client_model
            rec.status = 200
            payload = dumps(resp.body)
            rec_state.mark_encoded()
            return Reply(200, payload, ctx.headers)
        except GatewayError as exc:
            rec_state.failed(exc)
            exc.headers.update({k: v for k, v in ctx.headers.items() if k not in exc.headers})
            raise
        except asyncio.CancelledError:
            rec.status, rec.cut, rec.error_type = 499, "client_disconnected", "client_disconnected"
            raise
        except Exception:
            rec.status, rec.error_type = 500, "internal_error"
            raise
        finally:
            if not streaming:
                svc.recorder.finish(rec_state)

    def _stream(self, ctx: RequestContext, st: Any, start: StreamStart, req: ChatRequest,
                client_model: str) -> StreamReply:
        svc = self.svc
        enc = ChunkEncoder(client_model, ctx.request_id, req.include_usage)
        st.record.status = 200
        idle = st.route.timeouts.idle_s or st.route.timeouts.first_token_s or 60.0

        async def frames() -> AsyncIterator[bytes]:
            try:
                async for frame in relay(start, enc, st.record, idle, st.mark_first_byte):
                    yield frame
            finally:
                svc.recorder.finish(st)

        ctx.headers["content-type"] = "text/event-stream"
        ctx.headers["cache-control"] = "no-cache"
        return StreamReply(ctx.headers, frames())

    def _outcome_headers(self, ctx: RequestContext, rec: UsageRecord, outcome: Outcome) -> None:
        rec.provider = outcome.target.provider.name
        rec.upstream_model = outcome.target.model
        ctx.headers["x-modelyard-provider"] = rec.provider
        if outcome.fallback_from:
            rec.fallback = outcome.route.id
            rec.model = outcome.route.id
            ctx.headers["x-modelyard-fallback"] = outcome.route.id

    async def embeddings(self, ctx: RequestContext, body: Any) -> Reply:
        svc = self.svc
        rec = _record(ctx, "embeddings")
        st = svc.recorder.begin(rec, ctx)
        try:
            req = embeddings_request(body, svc.routes.default_model)
            rec.model = req.model
            if isinstance(req.body.get("user"), str):
                rec.user = req.body["user"]
            resolved = svc.routes.resolve(req.model)
            st.route = resolved.route
            ctx.principal.check_model(req.model, resolved.route.id)
            st.reservation = await svc.res.limits.acquire(ctx.principal, resolved.route,
                                                      ctx.body_size // 4 + 1)
            ctx.headers.update(st.reservation.headers)
            call = Call(req, resolved, ctx.principal.may_use,
                        time.monotonic() + (resolved.route.timeouts.total_s or 600.0))
            st.call = call
            st.mark_dispatch()
            outcome = await svc.dispatcher.run(call)
            st.mark_answered()
            self._outcome_headers(ctx, rec, outcome)
            resp: EmbeddingsResponse = outcome.result
            st.take_usage(resp.usage)
            resp.body["model"] = outcome.route.id if outcome.fallback_from else req.model
            rec.status = 200
            payload = dumps(resp.body)
            st.mark_encoded()
            return Reply(200, payload, ctx.headers)
        except GatewayError as exc:
            st.failed(exc)
            exc.headers.update({k: v for k, v in ctx.headers.items() if k not in exc.headers})
            raise
        except asyncio.CancelledError:
            rec.status, rec.cut, rec.error_type = 499, "client_disconnected", "client_disconnected"
            raise
        except Exception:
            rec.status, rec.error_type = 500, "internal_error"
            raise
        finally:
            svc.recorder.finish(st)


def _record(ctx: RequestContext, endpoint: str) -> UsageRecord:
    rec = UsageRecord(request_id=ctx.record_id or ctx.request_id, ts=ctx.ts,
                      key_id=ctx.principal.key_id, team=ctx.principal.team, endpoint=endpoint)
    if ctx.record_id and ctx.record_id != ctx.request_id:
        rec.extra["client_request_id"] = ctx.request_id
    return rec


def _default_max(route: Any) -> int:
    for t in route.targets:
        v = t.defaults.get("max_tokens")
        if isinstance(v, int):
            return v
    return DEFAULT_COMPLETION_ESTIMATE
