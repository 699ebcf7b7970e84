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
from gateway.config.schema import Retries, RouteConfig, Timeouts
from gateway.errors import (AllTargetsFailed, ContextWindowExceeded, GatewayError,
                            UpstreamAuthError, UpstreamError, UpstreamProtocolError,
                            UpstreamRateLimited, UpstreamTimeout)
from gateway.routing import Resolved, Route, RouteTable
from gateway.sse import SSEReader
from gateway.types import ChatRequest, EmbeddingsRequest, RawResponse, StreamEvent, Target
from gateway.upstream import Upstream, UpstreamResponse

log = logging.getLogger(__name__)
_CONNECT_S, _FIRST_TOKEN_S = 5.0, 60.0
_POLICY_CACHE_MAX = 4096


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


@dataclass(frozen=True, slots=True)
class _Policy:
    """Retries and timeouts for one target of one route: route, then provider, then global."""

    retries: Retries
    connect_s: float
    first_token_s: float


class _Unavailable(Exception):
    """The target left rotation (cool-down, or its probe is taken) after it was ordered."""


class Dispatcher:
    def __init__(self, routes: RouteTable, upstream: Upstream, balancer: Balancer,
                 metrics: Any = None) -> None:
        self.routes = routes
        self.upstream = upstream
        self.balancer = balancer
        self.metrics = metrics
        self._policies: dict[str, dict[str, _Policy]] = {}

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
                    raise self._all_failed(call, chain, deadline_spent=True)
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
        raise self._all_failed(call, chain, deadline_spent=call.deadline <= time.monotonic())

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
        policy = self._policy(route, target)
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
        policy = self._policy(route, target)
        first_s = min(policy.first_token_s, remaining)
        started = time.monotonic()
        probe = balancer.begin(target)
        status: int | None = None
        try:
            if target.provider.key_required and not target.provider.api_key:
                raise UpstreamAuthError(f"provider '{provider}' has no API key configured (set "
                                        f"its api_key, usually from an environment variable)",
                                        provider=provider)
            resp = await self.upstream.send(ureq, target, connect_s=policy.connect_s,
                                            first_byte_s=first_s, total_s=remaining)
            status = resp.status
            if status >= 400:
                raise adapter.parse_error(RawResponse(status, resp.headers, await resp.read()),
                                          target)
            if stream:
                result: Any = await self._prime(call, target, adapter, resp, started + first_s)
            else:
                raw = RawResponse(status, resp.headers, await resp.read())
                if isinstance(req, ChatRequest):
                    result = adapter.parse_response(raw, req, target)
                else:
                    result = adapter.parse_embeddings_response(raw, req, target)
        except UpstreamError as exc:
            self._failed(call, route, target, started, status, exc, probe)
            raise
        except BaseException:
            balancer.release_probe(target, probe)
            raise
        finally:
            balancer.end(target)
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

    # ------------------------------------------------------------ policy
    def _policy(self, route: Route, target: Target) -> _Policy:
        per_route = self._policies.get(route.id)
        if per_route is None:
            per_route = {}
            if len(self._policies) < _POLICY_CACHE_MAX:
                self._policies[route.id] = per_route
        policy = per_route.get(target.provider.name)
        if policy is None:
            policy = per_route[target.provider.name] = self._make_policy(route, target)
        return policy

    def _make_policy(self, route: Route, target: Target) -> _Policy:
        cfg = self.routes.cfg
        rc = _route_config(cfg.routes, route)
        pc = cfg.providers.get(target.provider.name)
        p_timeouts = None
        if pc is not None:
            p_timeouts = pc.timeouts or (Timeouts(total_s=pc.timeout_s) if pc.timeout_s else None)
        layers = [cfg.timeouts, p_timeouts, rc.timeouts if rc is not None else None]
        connect = _pick(layers, "connect_s") or _CONNECT_S
        first = _pick(layers, "first_token_s") or _FIRST_TOKEN_S
        retries = ((rc.retries if rc is not None else None)
                   or (pc.retries if pc is not None else None) or route.retries)
        return _Policy(retries, connect, first)

    # ------------------------------------------------------------ all failed
    def _all_failed(self, call: Call, chain: list[Resolved], *,
                    deadline_spent: bool) -> AllTargetsFailed:
        errors, model = call.errors, call.resolved.model_id
        if not errors:
            return self._all_cooling(model, [t for r in chain for t in r.targets])
        summary = _summary(call.attempts)
        n = len(call.attempts)
        last = errors[-1]
        log.warning("all upstream attempts failed", extra={
            "model": model, "attempts": [a.to_json() for a in call.attempts]})
        if deadline_spent or all(isinstance(e, UpstreamTimeout) for e in errors):
            err = AllTargetsFailed(f"'{model}' timed out upstream (timeouts.first_token_s / "
                                   f"total_s) after {n} attempts: {summary}", last=last)
            err.status, err.type, err.code = 504, "timeout_error", "upstream_timeout"
            return err
        if all(isinstance(e, UpstreamRateLimited) for e in errors):
            waits = [e.retry_after_s for e in errors if e.retry_after_s is not None]
            err = AllTargetsFailed(f"every target of '{model}' is rate limited upstream "
                                   f"({n} attempts): {summary}", last=last)
            err.status, err.type, err.code = 429, "rate_limit_exceeded", "upstream_rate_limited"
            err.headers["Retry-After"] = _seconds(min(waits) if waits else 1.0)
            return err
        if all(isinstance(e, UpstreamAuthError) for e in errors):
            return AllTargetsFailed(f"the provider account behind '{model}' rejected the "
                                    f"gateway's credentials (a configuration problem on the "
                                    f"gateway, not your API key; {n} attempts): {summary}",
                                    last=last, code="upstream_auth_error")
        return AllTargetsFailed(f"all {n} upstream attempts for '{model}' failed: {summary}",
                                last=last)

    def _all_cooling(self, model: str, targets: list[Target]) -> AllTargetsFailed:
        """No attempt was made: every target is out of rotation."""
        wait = min((self.balancer.wait_s(t) for t in targets), default=1.0)
        wait = 1.0 if wait == float("inf") else wait
        err = AllTargetsFailed(f"no target of '{model}' is available: all are cooling down after "
                               f"upstream failures; retry in {_seconds(wait)}s", last=None)
        if targets and all(self.balancer.rate_limited(t) for t in targets):
            err.status, err.type, err.code = 429, "rate_limit_exceeded", "upstream_rate_limited"
        err.headers["Retry-After"] = _seconds(wait)
        return err


def _retry_on(exc: BaseException, more: bool) -> bool:
    if not isinstance(exc, UpstreamError) or not exc.retryable:
        return False
    # a rate-limited target is in cool-down: try the next one rather than wait, if there is one
    return not (more and isinstance(exc, UpstreamRateLimited))


def _pick(layers: list[Timeouts | None], name: str) -> float | None:
    value = None
    for layer in layers:
        if layer is not None and getattr(layer, name) is not None:
            value = getattr(layer, name)
    return value


def _route_config(routes: dict[str, RouteConfig], route: Route) -> RouteConfig | None:
    """The config entry a built route came from (a wildcard route's ID is the concrete model)."""
    if not route.wildcard:
        return routes.get(route.id)
    best = ""
    for rid in routes:
        if rid.endswith("/*") and route.id.startswith(rid[:-1]) and len(rid) > len(best):
            best = rid
    return routes.get(best) if best else None


def _seconds(s: float) -> str:
    return str(max(1, int(s + 0.999)))


def _summary(attempts: list[Attempt]) -> str:
    """`p1: 500 x3; p2: timeout` — every attempt, grouped by provider and outcome, in order."""
    counts: dict[tuple[str, str], int] = {}
    for a in attempts:
        what = str(a.status) if a.status else (a.reason or "error")
        counts[(a.provider, what)] = counts.get((a.provider, what), 0) + 1
    parts = [f"{p}: {what}" + (f" x{n}" if n > 1 else "") for (p, what), n in counts.items()]
    last = next((a.error for a in reversed(attempts) if a.error), None)
    tail = f" (last: {last[:200]})" if last else ""
    return "; ".join(parts) + tail
