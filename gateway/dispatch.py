"""Targets in order × a tenacity `AsyncRetrying` per target, then the route's fallbacks.

The retry predicate reads only `error.retryable`; waits are exponential with full jitter, or the
upstream's Retry-After, and a wait longer than the request's remaining deadline moves on to the
next target instead of sleeping. One deadline (`timeouts.total_s`) covers every attempt.
Streams are primed here: an attempt counts as a success only once its first canonical event has
been decoded, so retries and fallbacks happen before the first byte reaches the client.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from adapters import get_adapter
from gateway.balancer import Balancer
from gateway.errors import (AllTargetsFailed, GatewayError, ContextWindowExceeded, UpstreamAuthError,
                            UpstreamError, UpstreamProtocolError, UpstreamRateLimited,
                            UpstreamTimeout)
from gateway.routing import Resolved, Route, RouteTable
from gateway.sse import SSEReader
from gateway.types import ChatRequest, EmbeddingsRequest, RawResponse, StreamEvent, Target
from gateway.upstream import Upstream, UpstreamResponse

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    route: str
    status: int | None
    duration_ms: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provider": self.provider, "model": self.model, "route": self.route,
                               "status": self.status, "duration_ms": round(self.duration_ms, 2)}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class StreamStart:
    """A stream whose first events are decoded; the rest is read by the pipeline."""

    response: UpstreamResponse
    reader: SSEReader
    decoder: Any
    first: list[StreamEvent]
    chunks: Any  # the async iterator of upstream byte chunks, already started


@dataclass(slots=True)
class Outcome:
    route: Route
    target: Target
    result: Any  # ChatResponse | EmbeddingsResponse | StreamStart
    fallback_from: str | None = None  # the route that was asked for, when a fallback answered


@dataclass(slots=True)
class Call:
    """One client request's dispatch state, shared with the pipeline for accounting and traces."""

    request: ChatRequest | EmbeddingsRequest
    resolved: Resolved
    may_use: Callable[[str, str], bool]  # (sent id, route id) -> allowed for this key
    deadline: float  # time.monotonic() value
    attempts: list[Attempt] = field(default_factory=list)
    retries: int = 0


class Dispatcher:
    def __init__(self, routes: RouteTable, upstream: Upstream, balancer: Balancer,
                 metrics: Any = None) -> None:
        self.routes = routes
        self.upstream = upstream
        self.balancer = balancer
        self.metrics = metrics

    # ------------------------------------------------------------ chain
    def _chain(self, call: Call, ids: tuple[str, ...], seen: set[str]) -> list[Resolved]:
        out = []
        for mid in ids:
            try:
                res = self.routes.resolve(mid)
            except GatewayError:  # ModelNotFound: the config was checked; skip defensively
                continue
            if res.route.id in seen or not call.may_use(mid, res.route.id):
                continue
            seen.add(res.route.id)
            out.append(res)
        return out

    async def run(self, call: Call) -> Outcome:
        first = call.resolved
        seen = {first.route.id}
        chain = [first] + self._chain(call, first.route.fallbacks, seen)
        errors: list[UpstreamError] = []
        context_switched = False
        i = 0
        while i < len(chain):
            res = chain[i]
            i += 1
            targets = self.balancer.order(res.targets, res.route.strategy)
            if not targets and i == len(chain) and not errors:
                targets = list(res.targets)  # everything cooled down: probe rather than refuse
            for n, target in enumerate(targets):
                more = n + 1 < len(targets) or i < len(chain)
                try:
                    result = await self._target(call, res.route, target, more)
                except ContextWindowExceeded as exc:
                    ctx = () if context_switched else res.route.context_fallbacks
                    chain_ctx = self._chain(call, ctx, seen)
                    if not chain_ctx:
                        raise
                    errors.append(exc)
                    context_switched = True
                    chain[i:] = chain_ctx
                    break
                except UpstreamError as exc:
                    errors.append(exc)
                    if not exc.failover:
                        raise
                    continue
                fb = first.model_id if res is not first else None
                if fb is not None and self.metrics is not None:
                    self.metrics.fallback(first.route.id, res.route.id)
                return Outcome(res.route, target, result, fallback_from=fb)
            if call.deadline - time.monotonic() <= 0:
                break
        raise _all_failed(call, errors)

    # ------------------------------------------------------------ one target, with retries
    async def _target(self, call: Call, route: Route, target: Target, more: bool) -> Any:
        retries = route.retries

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            after = getattr(exc, "retry_after_s", None)
            if after is not None:
                return float(after)
            cap = min(retries.backoff_max_s, retries.backoff_s * 2 ** (rs.attempt_number - 1))
            return random.uniform(0, cap)

        def stop(rs: RetryCallState) -> bool:
            if rs.attempt_number >= retries.attempts:
                return True
            return rs.upcoming_sleep >= call.deadline - time.monotonic()

        def retry_on(exc: BaseException) -> bool:
            if not isinstance(exc, UpstreamError) or not exc.retryable:
                return False
            # a rate-limited target is in cool-down: try the next one rather than wait, if any
            return not (more and isinstance(exc, UpstreamRateLimited))

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            call.retries += 1
            if self.metrics is not None and isinstance(exc, UpstreamError):
                self.metrics.retry(target.provider.name, exc.reason)

        retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(retry_on),
                                 before_sleep=before_sleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                return await self._attempt(call, route, target)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, call: Call, route: Route, target: Target) -> Any:
        remaining = call.deadline - time.monotonic()
        provider = target.provider.name
        if remaining <= 0:
            raise UpstreamTimeout("the request's time budget (timeouts.total_s) ran out",
                                  provider=provider)
        adapter = get_adapter(target.provider.adapter)
        req = call.request
        stream = isinstance(req, ChatRequest) and req.stream
        if isinstance(req, ChatRequest):
            ureq = adapter.build_request(req, target)
        else:
            ureq = adapter.build_embeddings_request(req, target)
        t = route.timeouts
        started = time.monotonic()
        self.balancer.begin(target)
        status: int | None = None
        try:
            if target.provider.key_required and not target.provider.api_key:
                raise UpstreamAuthError(f"provider '{provider}' has no API key configured (set "
                                        f"its api_key, usually from an environment variable)",
                                        provider=provider)
            resp = await self.upstream.send(
                ureq, target, connect_s=t.connect_s or 5.0,
                first_byte_s=min(t.first_token_s or remaining, remaining), total_s=remaining)
            status = resp.status
            if status >= 400:
                raw = RawResponse(status, resp.headers, await resp.read())
                raise adapter.parse_error(raw, target)
            if stream:
                result = await self._prime(call, route, target, adapter, resp)
            else:
                raw = RawResponse(status, resp.headers, await resp.read())
                if isinstance(req, ChatRequest):
                    result = adapter.parse_response(raw, req, target)
                else:
                    result = adapter.parse_embeddings_response(raw, req, target)
        except UpstreamError as exc:
            self._failed(call, route, target, started, status, exc)
            raise
        except BaseException:
            self.balancer.release_probe(target)
            raise
        finally:
            self.balancer.end(target)
        self.balancer.success(target, time.monotonic() - started)
        call.attempts.append(Attempt(provider, target.model, route.id, status,
                                     (time.monotonic() - started) * 1000))
        return result

    async def _prime(self, call: Call, route: Route, target: Target, adapter: Any,
                     resp: UpstreamResponse) -> StreamStart:
        import asyncio

        decoder = adapter.stream_decoder(call.request, target)
        reader = SSEReader()
        chunks = resp.chunks().__aiter__()
        budget = min(route.timeouts.first_token_s or 60.0, call.deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(budget, 0.001)):
                while True:
                    try:
                        data = await chunks.__anext__()
                    except StopAsyncIteration:
                        events = [e for ev in reader.close() for e in decoder.feed(ev)]
                        events += decoder.close()
                        if events:
                            return StreamStart(resp, reader, decoder, events, chunks)
                        raise UpstreamProtocolError(
                            f"provider '{target.provider.name}' ended the stream before any event",
                            provider=target.provider.name) from None
                    events = []
                    for ev in reader.feed(data):
                        events += decoder.feed(ev)
                    if events:
                        return StreamStart(resp, reader, decoder, events, chunks)
        except TimeoutError:
            resp.close()
            raise UpstreamTimeout(f"provider '{target.provider.name}' sent no stream event within "
                                  f"{budget:.1f}s", provider=target.provider.name) from None
        except UpstreamError:
            resp.close()
            raise

    def _failed(self, call: Call, route: Route, target: Target, started: float,
                status: int | None, exc: UpstreamError) -> None:
        duration = (time.monotonic() - started) * 1000
        call.attempts.append(Attempt(target.provider.name, target.model, route.id,
                                     exc.upstream_status or status, duration, exc.message))
        log.warning("upstream attempt failed", extra={"provider": target.provider.name,
                    "model": target.model, "status": exc.upstream_status or status,
                    "reason": exc.reason, "duration_ms": round(duration, 1)})
        if self.metrics is not None:
            self.metrics.upstream_error(target.provider.name, exc.reason)
        if exc.failover or exc.retryable:  # the target's fault, not the request's
            self.balancer.failure(target, rate_limited=isinstance(exc, UpstreamRateLimited),
                                  retry_after_s=exc.retry_after_s)
        else:
            self.balancer.release_probe(target)


def _all_failed(call: Call, errors: list[UpstreamError]) -> AllTargetsFailed:
    n = len(call.attempts)
    if not errors:
        err = AllTargetsFailed(f"no target of '{call.resolved.model_id}' is available "
                               f"(all are cooling down after failures)", last=None)
        err.headers["Retry-After"] = "1"
        return err
    summary = "; ".join(f"{a.provider}: {a.status or 'error'}" + (f" ({a.error[:120]})" if a.error else "")
                        for a in call.attempts[-4:])
    last = errors[-1]
    if all(isinstance(e, UpstreamRateLimited) for e in errors):
        waits = [e.retry_after_s for e in errors if e.retry_after_s is not None]
        err = AllTargetsFailed(f"every target of '{call.resolved.model_id}' is rate limited "
                               f"upstream ({n} attempts): {summary}", last=last)
        err.status, err.type, err.code = 429, "rate_limit_exceeded", "upstream_rate_limited"
        err.headers["Retry-After"] = str(max(1, int(min(waits) + 0.999))) if waits else "1"
        return err
    if all(isinstance(e, UpstreamAuthError) for e in errors):
        msg = (f"the gateway's credentials for the provider account were rejected "
               f"({n} attempts): {summary}")
    else:
        msg = f"all {n} upstream attempts for '{call.resolved.model_id}' failed: {summary}"
    err = AllTargetsFailed(msg, last=last)
    if isinstance(last, UpstreamTimeout):
        err.status, err.type, err.code = 504, "timeout_error", "upstream_timeout"
    return err
