"""Targets in order × a tenacity `AsyncRetrying` per target, then the route's fallbacks.

The retry predicate reads only `error.retryable` (plus: a rate-limited target is left for the next
one when there is one); waits are exponential with full jitter, or the upstream's Retry-After, and
a wait longer than the request's remaining deadline, or than the target's cool-down, moves on to
the next target instead of sleeping. One deadline (`timeouts.total_s`) covers every attempt.
Streams are primed here: an attempt counts as a success only once its first canonical event has
been decoded, so retries and fallbacks happen before the first byte reaches the client.

Hot path: the first attempt on a target runs without tenacity; only a retryable failure builds the
`AsyncRetrying`, which replays that failure as its own first attempt (same waits, same stop rules).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from adapters import get_adapter
from gateway.balancer import Balancer
from gateway.config.schema import Retries
from gateway.errors import (AllTargetsFailed, ContextWindowExceeded, GatewayError,
                            UpstreamAuthError, UpstreamError, UpstreamProtocolError,
                            UpstreamRateLimited, UpstreamTimeout)
from gateway.failures import all_failed
from gateway.policy import Policies
from gateway.routing import Resolved, Route, RouteTable
from gateway.sse import SSEReader
from gateway.types import ChatRequest, EmbeddingsRequest, RawResponse, StreamEvent, Target
from gateway.upstream import Upstream, UpstreamResponse

log = logging.getLogger(__name__)
# what an adapter raises on an answer of a shape it did not expect: the provider's fault (502)
_UNREADABLE = (TypeError, ValueError, KeyError, AttributeError, IndexError)


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    route: str
    status: int | None
    duration_ms: float
    error: str | None = None
    reason: str = ""  # the metrics reason of a failure: status code, timeout, connect, error

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
    errors: list[UpstreamError] = field(default_factory=list)
    tripped: str = ""  # key of the target this request's last failure took out of rotation
    estimate: int = 0  # tokens reserved for this request (provider-account tpm)
    span: Any = None  # the OpenTelemetry request span (tracing on)
    held: list[Any] = field(default_factory=list)  # provider-account limit reservations
    current: Target | None = None  # the target of the attempt in flight (or the last one)


class _Unavailable(Exception):
    """The target left rotation (cool-down, or its probe is taken) after it was ordered."""


class Dispatcher:
    def __init__(self, routes: RouteTable, upstream: Upstream, balancer: Balancer,
                 metrics: Any = None, *, gate: Any = None, tracing: Any = None) -> None:
        self.routes = routes
        self.upstream = upstream
        self.balancer = balancer
        self.metrics = metrics
        self.tracing = tracing  # gateway.tracing.Tracing, or None
        # providers with their own rpm/tpm: reserved per attempt through `gate`
        self.gate = gate
        self.account_limits = {n: p.limits for n, p in routes.cfg.providers.items()
                               if p.limits is not None and (p.limits.rpm or p.limits.tpm)}
        self.policies = Policies(routes.cfg)

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
        chain = [first]
        if first.route.fallbacks:
            chain += self._chain(call, first.route.fallbacks, {first.route.id})
        i = 0
        while i < len(chain):
            res = chain[i]
            i += 1
            targets = self.balancer.order(res.targets, res.route.strategy)
            for n, target in enumerate(targets):
                if call.deadline <= time.monotonic():
                    raise self._all_failed(call, chain, True)
                more = n + 1 < len(targets) or i < len(chain)
                try:
                    result = await self._target(call, res.route, target, more)
                except _Unavailable:
                    continue
                except ContextWindowExceeded:
                    tried = {r.route.id for r in chain[:i]}
                    bigger = self._chain(call, res.route.context_fallbacks, tried)
                    if not bigger:
                        raise
                    chain[i:] = bigger  # only a larger window helps: plain fallbacks are dropped
                    break
                except UpstreamError as exc:
                    if not exc.failover:
                        raise
                    continue
                return self._outcome(first, res, target, result)
        raise self._all_failed(call, chain, call.deadline <= time.monotonic())

    def _all_failed(self, call: Call, chain: list[Resolved], spent: bool) -> AllTargetsFailed:
        targets = [t for r in chain for t in r.targets]
        return all_failed(call, targets, self.balancer, deadline_spent=spent)

    def _outcome(self, first: Resolved, res: Resolved, target: Target, result: Any) -> Outcome:
        if res is first:
            return Outcome(res.route, target, result)
        if self.metrics is not None:
            m = self.metrics
            self.metrics.fallback(m.model_label(first.route.id, first.route.wildcard),
                                  m.model_label(res.route.id, res.route.wildcard))
        log.info("answered by a fallback", extra={"model": first.model_id,
                 "fallback": res.route.id, "provider": target.provider.name})
        return Outcome(res.route, target, result, fallback_from=first.model_id)

    # ------------------------------------------------------------ one target, with retries
    async def _target(self, call: Call, route: Route, target: Target, more: bool) -> Any:
        try:
            return await self._attempt(call, route, target)
        except UpstreamError as exc:
            failed = exc
        policy = self.policies.of(route, target)
        if policy.retries.attempts <= 1 or not _retry_on(failed, more):
            raise failed
        return await self._retry(call, route, target, more, policy.retries, failed)

    async def _retry(self, call: Call, route: Route, target: Target, more: bool,
                     retries: Retries, failed: UpstreamError) -> Any:
        """Attempts 2..N through tenacity; attempt 1 is `failed`, replayed."""
        replay: list[UpstreamError] = [failed]
        balancer = self.balancer

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            after = getattr(exc, "retry_after_s", None)
            if after is not None:
                return float(after)
            cap = min(retries.backoff_max_s, retries.backoff_s * 2 ** (rs.attempt_number - 1))
            return random.uniform(0, cap)  # full jitter

        def stop(rs: RetryCallState) -> bool:
            if rs.attempt_number >= retries.attempts:
                return True
            sleep = rs.upcoming_sleep
            if sleep >= call.deadline - time.monotonic():
                return True  # the wait would outlive the request: try the next target now
            if call.tripped == target.key:
                return False  # our own failure tripped it: our retry is the probe
            return balancer.wait_s(target) > sleep  # tripped elsewhere: try the next target

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            call.retries += 1
            if self.metrics is not None and isinstance(exc, UpstreamError):
                self.metrics.retry(target.provider.name, exc.reason)

        retrying = AsyncRetrying(stop=stop, wait=wait, before_sleep=before_sleep, reraise=True,
                                 retry=retry_if_exception(lambda e: _retry_on(e, more)))
        async for attempt in retrying:
            with attempt:
                if replay:
                    raise replay.pop()
                return await self._attempt(call, route, target)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, call: Call, route: Route, target: Target) -> Any:
        balancer = self.balancer
        if not balancer.available(target, call.tripped == target.key):
            raise _Unavailable()
        remaining = call.deadline - time.monotonic()
        provider = target.provider.name
        call.current = target
        if remaining <= 0:
            exc = UpstreamTimeout("the request's time budget (timeouts.total_s) ran out",
                                  provider=provider)
            call.errors.append(exc)
            raise exc
        adapter = get_adapter(target.provider.adapter)
        req = call.request
        if isinstance(req, ChatRequest):
            ureq = adapter.build_request(req, target)
            stream = req.stream
        else:
            ureq = adapter.build_embeddings_request(req, target)
            stream = False
        policy = self.policies.of(route, target)
        first_s = min(policy.first_token_s, remaining)
        started = time.monotonic()
        probe = balancer.begin(target)
        status: int | None = None
        span = None
        if self.tracing is not None:
            span = self.tracing.start_attempt(call.span, target, route.id, req.body,
                                              "chat" if isinstance(req, ChatRequest)
                                              else "embeddings", ureq.headers)
        try:
            if target.provider.key_required and not target.provider.api_key:
                raise UpstreamAuthError(f"provider '{provider}' has no API key configured (set "
                                        f"its api_key, usually from an environment variable)",
                                        provider=provider)
            if provider in self.account_limits and self.gate is not None:
                call.held.append(await self.gate(target, self.account_limits[provider],
                                                 call.estimate))
            resp = await self.upstream.send(ureq, target, connect_s=policy.connect_s,
                                            first_byte_s=first_s, total_s=remaining)
            status = resp.status
            try:
                if status >= 400:
                    raise adapter.parse_error(
                        RawResponse(status, resp.headers, await resp.read()), target)
                if stream:
                    result: Any = await self._prime(call, target, adapter, resp,
                                                    started + first_s)
                else:
                    raw = RawResponse(status, resp.headers, await resp.read())
                    if isinstance(req, ChatRequest):
                        result = adapter.parse_response(raw, req, target)
                    else:
                        result = adapter.parse_embeddings_response(raw, req, target)
            except _UNREADABLE as exc:  # an answer of a shape the adapter did not expect
                resp.close()
                # with its traceback: an odd answer, or a bug of ours in the adapter
                log.warning("the %s adapter could not read an answer of provider '%s'",
                            target.provider.adapter, provider, exc_info=True)
                err = UpstreamProtocolError(
                    f"provider '{provider}' sent a {status} answer the gateway could not read "
                    f"({type(exc).__name__})", provider=provider)
                err.retryable = False  # not the same target again (a billed call each time)
                raise err from exc
        except UpstreamError as exc:
            self._failed(call, route, target, started, status, exc, probe)
            if span is not None:
                self.tracing.end_attempt(span, exc.upstream_status or status, exc)
            raise
        except BaseException as exc:
            balancer.release_probe(target, probe)
            if span is not None:
                self.tracing.end_attempt(span, status, exc)
            raise
        finally:
            balancer.end(target)
        if span is not None:
            self.tracing.end_attempt(span, status, None, result)
        latency = time.monotonic() - started
        balancer.success(target, latency, probe=probe)
        call.attempts.append(Attempt(provider, target.model, route.id, status, latency * 1000))
        return result

    async def _prime(self, call: Call, target: Target, adapter: Any, resp: UpstreamResponse,
                     until: float) -> StreamStart:
        """Read until the first canonical event, within the first-token budget (from `until`,
        a time.monotonic() value counted from the attempt's start)."""
        decoder = adapter.stream_decoder(call.request, target)
        reader = SSEReader()
        chunks = resp.chunks().__aiter__()
        try:
            async with asyncio.timeout(max(until - time.monotonic(), 0.0)):
                while True:
                    try:
                        data = await chunks.__anext__()
                    except StopAsyncIteration:
                        events = [e for ev in reader.close() for e in decoder.feed(ev)]
                        events += decoder.close()
                        if events:
                            return StreamStart(resp, reader, decoder, events, chunks)
                        raise UpstreamProtocolError(
                            f"provider '{target.provider.name}' ended the stream before any "
                            f"event", provider=target.provider.name) from None
                    events = []
                    for ev in reader.feed(data):
                        events += decoder.feed(ev)
                    if events:
                        return StreamStart(resp, reader, decoder, events, chunks)
        except TimeoutError:
            resp.close()
            raise UpstreamTimeout(f"provider '{target.provider.name}' sent no stream event in "
                                  f"time (timeouts.first_token_s)",
                                  provider=target.provider.name) from None
        except BaseException:  # an upstream error event, a cut, the client leaving: free the socket
            resp.close()
            raise

    def _failed(self, call: Call, route: Route, target: Target, started: float,
                status: int | None, exc: UpstreamError, probe: bool) -> None:
        duration = time.monotonic() - started
        provider = target.provider.name
        status = exc.upstream_status or status
        message = exc.message
        if isinstance(exc, UpstreamAuthError) and status:
            # never echo a provider's words about our key (they may quote part of it)
            message = f"provider '{provider}' rejected the gateway's credentials ({status})"
        call.errors.append(exc)
        call.attempts.append(Attempt(provider, target.model, route.id, status, duration * 1000,
                                     message, exc.reason))
        log.warning("upstream attempt failed", extra={
            "provider": provider, "model": target.model, "route": route.id, "status": status,
            "reason": exc.reason, "duration_ms": round(duration * 1000, 1)})
        if self.metrics is not None:
            self.metrics.upstream_error(provider, exc.reason)
        if exc.failover or exc.retryable:  # the target's fault, not the request's
            tripped = self.balancer.failure(
                target, rate_limited=isinstance(exc, UpstreamRateLimited),
                retry_after_s=exc.retry_after_s, probe=probe, duration_s=duration)
            call.tripped = target.key if tripped else ""
        else:  # the target answered, about the request itself: it is healthy
            self.balancer.success(target, None, probe=probe)

def _retry_on(exc: BaseException, more: bool) -> bool:
    if not isinstance(exc, UpstreamError) or not exc.retryable:
        return False
    # a rate-limited target is in cool-down: try the next one rather than wait, if there is one
    return not (more and isinstance(exc, UpstreamRateLimited))


