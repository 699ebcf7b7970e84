"""The one error a client gets when every target and fallback failed (or none was available),
with a summary of the attempts; each attempt is logged in full."""
from __future__ import annotations

import logging
from typing import Any

from gateway.errors import AllTargetsFailed, UpstreamAuthError, UpstreamRateLimited, UpstreamTimeout
from gateway.types import Target

log = logging.getLogger(__name__)


def all_failed(call: Any, targets: list[Target], balancer: Any, *,
               deadline_spent: bool) -> AllTargetsFailed:
    errors, model = call.errors, call.resolved.model_id
    if not errors:
        return all_cooling(model, targets, balancer)
    summary = summarise(call.attempts)
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
        err.headers["Retry-After"] = seconds(min(waits) if waits else 1.0)
        return err
    if all(isinstance(e, UpstreamAuthError) for e in errors):
        return AllTargetsFailed(f"the provider account behind '{model}' rejected the "
                                f"gateway's credentials (a configuration problem on the "
                                f"gateway, not your API key; {n} attempts): {summary}",
                                last=last, code="upstream_auth_error")
    return AllTargetsFailed(f"all {n} upstream attempts for '{model}' failed: {summary}",
                            last=last)


def all_cooling(model: str, targets: list[Target], balancer: Any) -> AllTargetsFailed:
    """No attempt was made: every target is out of rotation."""
    wait = min((balancer.wait_s(t) for t in targets), default=1.0)
    wait = 1.0 if wait == float("inf") else wait
    err = AllTargetsFailed(f"no target of '{model}' is available: all are cooling down after "
                           f"upstream failures; retry in {seconds(wait)}s", last=None)
    if targets and all(balancer.rate_limited(t) for t in targets):
        err.status, err.type, err.code = 429, "rate_limit_exceeded", "upstream_rate_limited"
    err.headers["Retry-After"] = seconds(wait)
    return err


def seconds(s: float) -> str:
    return str(max(1, int(s + 0.999)))


def summarise(attempts: list[Any]) -> str:
    """`p1: 500 x3; p2: timeout` — every attempt, grouped by provider and outcome, in order."""
    counts: dict[tuple[str, str], int] = {}
    for a in attempts:
        what = str(a.status) if a.status else (a.reason or "error")
        counts[(a.provider, what)] = counts.get((a.provider, what), 0) + 1
    parts = [f"{p}: {what}" + (f" x{n}" if n > 1 else "") for (p, what), n in counts.items()]
    last = next((a.error for a in reversed(attempts) if a.error), None)
    tail = f" (last: {last[:200]})" if last else ""
    return "; ".join(parts) + tail
