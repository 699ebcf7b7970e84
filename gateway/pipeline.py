"""The request's story: resolve → authorise → reserve limits → dispatch → record usage → reconcile.

`Pipeline.chat()` and `.embeddings()` return a `Reply` (bytes) or a `StreamReply` (an async
iterator of SSE frames) to the HTTP layer; the usage record is written in a `finally` whatever
happened (success, error, limits, client gone, stream cut) — for streams, when the relay ends.

A request whose task the graceful shutdown cuts (`streaming.cut_at_shutdown`) before an answer
started raises a 503 `gateway_shutdown` (`cut="shutdown"`) that the HTTP layer sends, instead of
the cancellation: the client did not leave, it is told to retry.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

from gateway.accounting.record import UsageRecord
from gateway.auth import Principal
from gateway.dispatch import Call, Outcome, StreamStart
from gateway.errors import GatewayError
from gateway.streaming import (SHUTDOWN_CUT, SHUTDOWN_ERROR, ChunkEncoder, absorb_shutdown_cut,
                               cut_by_shutdown, relay, shutdown_error)
from gateway.types import ChatRequest, dumps
from gateway.validation import chat_request, embeddings_request

DEFAULT_COMPLETION_ESTIMATE = 1024


@dataclass(slots=True)
class RequestContext:
    request_id: str
    principal: Principal | None
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
    abandon: Callable[[], None] = lambda: None  # the client left before the first frame
    # the HTTP layer failed after the response head went out (a bug): called before it closes
    # `frames`, so that the record says the gateway cut the stream, not the client
    fail: Callable[[], None] = lambda: None


Loader = Callable[[], Awaitable[tuple[Any, int]]]  # reads and decodes the body: (json, size)


class Pipeline:
    def __init__(self, svc: Any) -> None:
        self.svc = svc  # gateway.services.Services: one config generation's resources

    async def chat(self, ctx: RequestContext, headers: Mapping[str, str],
                   load: Loader) -> Reply | StreamReply:
        svc = self.svc
        st = svc.recorder.begin(_record(ctx, "chat"), ctx)
        rec = st.record
        streaming = False
        try:
            body = await self._admit(ctx, st, headers, load)
            req = chat_request(body, svc.routes.default_model)
            rec.model, rec.stream = req.model, req.stream
            estimate = ctx.body_size // 4
            outcome = await self._dispatch(ctx, st, req, estimate, req.max_tokens)
            client_model = outcome.route.id if outcome.fallback_from else req.model
            if isinstance(outcome.result, StreamStart):
                streaming = True
                return self._stream(ctx, st, outcome.result, req, client_model)
            return self._reply(ctx, st, outcome.result, client_model)
        except BaseException as exc:
            instead = _failed(st, exc)
            if instead is None:
                raise
            raise instead from None
        finally:
            if not streaming:
                svc.recorder.finish(st)

    async def embeddings(self, ctx: RequestContext, headers: Mapping[str, str],
                         load: Loader) -> Reply:
        svc = self.svc
        st = svc.recorder.begin(_record(ctx, "embeddings"), ctx)
        try:
            body = await self._admit(ctx, st, headers, load)
            req = embeddings_request(body, svc.routes.default_model)
            st.record.model = req.model
            outcome = await self._dispatch(ctx, st, req, ctx.body_size // 4 + 1, 0)
            client_model = outcome.route.id if outcome.fallback_from else req.model
            return self._reply(ctx, st, outcome.result, client_model)
        except BaseException as exc:
            instead = _failed(st, exc)
            if instead is None:
                raise
            raise instead from None
        finally:
            svc.recorder.finish(st)

    # ------------------------------------------------------------ the shared steps
    async def _admit(self, ctx: RequestContext, st: Any, headers: Mapping[str, str],
                     load: Loader) -> Any:
        """Authenticate, then read the body: both inside the recorded part of the request."""
        principal = await self.svc.auth.authenticate(headers)
        ctx.principal = principal
        st.record.key_id, st.record.team = principal.key_id, principal.team
        body, ctx.body_size = await load()
        if isinstance(body, dict):
            ctx.trace = ctx.trace or body.get("observability") is True
            if isinstance(body.get("user"), str):
                st.record.user = body["user"]
        return body

    async def _dispatch(self, ctx: RequestContext, st: Any, req: Any, prompt_estimate: int,
                        max_tokens: int | None) -> Outcome:
        """Resolve → authorise → reserve limits → dispatch."""
        svc = self.svc
        resolved = svc.routes.resolve(req.model)
        route = st.route = resolved.route
        principal: Principal = ctx.principal  # type: ignore[assignment]  # set by _admit
        principal.check_model(req.model, route.id)
        if max_tokens is None:
            max_tokens = _default_max(route)
        st.reservation = await svc.res.limits.acquire(principal, route,
                                                      prompt_estimate + max_tokens)
        ctx.headers.update(st.reservation.headers)
        call = st.call = Call(req, resolved, principal.may_use,
                              time.monotonic() + (route.timeouts.total_s or 600.0),
                              estimate=prompt_estimate + max_tokens, span=st.span)
        svc.recorder.dispatching(st)
        st.mark_dispatch()
        outcome = await svc.dispatcher.run(call)
        st.mark_answered()
        rec = st.record
        rec.provider = outcome.target.provider.name
        rec.upstream_model = outcome.target.model
        ctx.headers["x-modelyard-provider"] = rec.provider
        if outcome.fallback_from:
            st.route = outcome.route  # priced and labelled as the route that answered
            rec.fallback = rec.model = outcome.route.id
            ctx.headers["x-modelyard-fallback"] = outcome.route.id
        return outcome

    def _reply(self, ctx: RequestContext, st: Any, resp: Any, client_model: str) -> Reply:
        st.take_usage(resp.usage)
        resp.body["model"] = client_model
        st.record.status = 200
        payload = dumps(resp.body)
        st.mark_encoded()
        return Reply(200, payload, ctx.headers)

    def _stream(self, ctx: RequestContext, st: Any, start: StreamStart, req: ChatRequest,
                client_model: str) -> StreamReply:
        svc = self.svc
        enc = ChunkEncoder(client_model, ctx.request_id, req.include_usage)
        st.record.status = 200
        idle = st.route.timeouts.idle_s or st.route.timeouts.first_token_s or 60.0

        started = finished = False

        async def frames() -> AsyncIterator[bytes]:
            nonlocal started, finished
            started = True
            relayed = relay(start, enc, st.record, idle, st.mark_first_byte)
            try:
                async for frame in relayed:
                    yield frame
            finally:
                try:
                    # closed here, in this task, when the HTTP layer closes these frames (the
                    # client left, the shutdown cut it): `async for` would leave it to the
                    # garbage collector, after the record was written and without its cut
                    await relayed.aclose()
                finally:
                    finished = True
                    svc.recorder.finish(st)

        def abandon() -> None:
            """The response never started (the client left during `prepare`): the relay never
            ran, so close the upstream stream and record the request here."""
            if started:
                return
            start.response.close()
            rec = st.record
            if rec.cut:  # `fail` said why (the head went out, then the gateway failed)
                pass
            elif cut_by_shutdown():  # cut while its head was being sent: nothing reached it
                rec.status, rec.cut, rec.error_type = 503, SHUTDOWN_CUT, SHUTDOWN_ERROR
            else:
                rec.status, rec.cut, rec.error_type = 499, "client_disconnected", \
                    "client_disconnected"
            svc.recorder.finish(st)

        def fail() -> None:
            rec = st.record
            # once recorded it stays as recorded; the relay's own end (an upstream cut) too
            if not finished and not rec.cut:
                rec.cut, rec.error_type = "upstream_cut", "internal_error"

        ctx.headers["content-type"] = "text/event-stream"
        ctx.headers["cache-control"] = "no-cache"
        return StreamReply(ctx.headers, frames(), abandon, fail)


def _failed(st: Any, exc: BaseException) -> GatewayError | None:
    """Record why the request failed. Returns the error to raise instead of `exc`: for a request
    cut by the shutdown, the 503 its client is sent (the cancellation is absorbed)."""
    rec = st.record
    if st.call is not None and not rec.provider:
        # the request reached an upstream (or was waiting on one when it was cut): say which
        if st.call.attempts:
            last = st.call.attempts[-1]
            rec.provider, rec.upstream_model = last.provider, last.model
        elif st.call.current is not None:
            rec.provider = st.call.current.provider.name
            rec.upstream_model = st.call.current.model
        if rec.provider:
            st.ctx.headers["x-modelyard-provider"] = rec.provider
    if isinstance(exc, GatewayError):
        st.failed(exc)
        exc.headers.update({k: v for k, v in st.ctx.headers.items() if k not in exc.headers})
    elif isinstance(exc, asyncio.CancelledError):
        if cut_by_shutdown():  # the client is still there: it gets a 503 (SHUTDOWN_ERROR)
            absorb_shutdown_cut()
            err = shutdown_error()
            _failed(st, err)
            rec.cut = SHUTDOWN_CUT
            return err
        rec.status, rec.cut, rec.error_type = 499, "client_disconnected", "client_disconnected"
    else:
        rec.status, rec.error_type = 500, "internal_error"
    return None


def _record(ctx: RequestContext, endpoint: str) -> UsageRecord:
    rec = UsageRecord(request_id=ctx.record_id or ctx.request_id, ts=ctx.ts, endpoint=endpoint)
    if ctx.record_id and ctx.record_id != ctx.request_id:
        rec.extra["client_request_id"] = ctx.request_id
    return rec


def _default_max(route: Any) -> int:
    for t in route.targets:
        v = t.defaults.get("max_tokens")
        if isinstance(v, int):
            return v
    return DEFAULT_COMPLETION_ESTIMATE
