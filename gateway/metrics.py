"""Every Prometheus collector, with fixed bounded labels, and small `observe_*` helpers.

Label values are bounded: `model` is the route ID (a wildcard route's concrete IDs up to
`metrics.max_models`, then `other`), `team` comes from the configured teams (else `other`),
`provider` from the config. Key IDs, user IDs and prompts are never labels. With `--workers N`
the CLI sets PROMETHEUS_MULTIPROC_DIR before this module is imported, and `/metrics` aggregates
every worker's values.
"""
from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any, Callable, Iterable, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from gateway.aio import running_loop

NS = "modelyard"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

REQUESTS = Counter(f"{NS}_requests_total", "Client requests by route model, provider and the "
                   "HTTP status sent to the client", ["model", "provider", "status"])
DURATION = Histogram(f"{NS}_request_duration_seconds", "Whole client request duration",
                     ["model", "provider"], buckets=LATENCY_BUCKETS)
TTFT = Histogram(f"{NS}_time_to_first_token_seconds", "Time to the first byte of the answer "
                 "(first stream event)", ["model", "provider"], buckets=LATENCY_BUCKETS)
OVERHEAD = Histogram(f"{NS}_overhead_seconds", "Time spent in the gateway itself, upstream "
                     "excluded", ["model"], buckets=OVERHEAD_BUCKETS)
TOKENS = Counter(f"{NS}_tokens_total", "Tokens by type (prompt|completion|cached|reasoning)",
                 ["model", "provider", "team", "type"])
COST = Counter(f"{NS}_cost_usd_total", "Cost in USD", ["model", "team"])
RATE_LIMITED = Counter(f"{NS}_rate_limited_total", "Requests refused by a gateway limit or "
                       "quota", ["scope", "team"])
RETRIES = Counter(f"{NS}_retries_total", "Upstream retries by reason (status code, timeout, "
                  "connect)", ["provider", "reason"])
FALLBACKS = Counter(f"{NS}_fallbacks_total", "Requests answered by a fallback route",
                    ["from_model", "to_model"])
UPSTREAM_ERRORS = Counter(f"{NS}_upstream_errors_total", "Failed upstream attempts",
                          ["provider", "status"])
INFLIGHT = Gauge(f"{NS}_inflight_requests", "Requests in flight", ["model"],
                 multiprocess_mode="livesum")
PROVIDER_UP = Gauge(f"{NS}_provider_up", "1 while any of the provider's targets is in rotation",
                    ["provider"], multiprocess_mode="livemin")
USAGE_DROPPED = Counter(f"{NS}_usage_records_dropped_total", "Usage records dropped because the "
                        "buffer was full")
CONFIG_RELOADS = Counter(f"{NS}_config_reloads_total", "Config reloads by result (ok|error)",
                         ["result"])


class _AbsentUntilSet:
    """A label-less gauge that is not exported until first set. A plain label-less Gauge is
    exported as 0 from import on (in multiprocess mode too), so `redis_up` would read 0 on
    every replica that has no Redis and the `min(modelyard_redis_up) == 0` alert would fire."""

    def __init__(self, name: str, documentation: str,
                 multiprocess_mode: Literal["livemin", "livemax", "livesum"]) -> None:
        self._args = (name, documentation)
        self._mode = multiprocess_mode
        self._gauge: Gauge | None = None

    def set(self, value: float) -> None:
        if self._gauge is None:
            self._gauge = Gauge(*self._args, multiprocess_mode=self._mode)
        self._gauge.set(value)


REDIS_UP = _AbsentUntilSet(f"{NS}_redis_up", "1 while Redis answers (absent without Redis)",
                           multiprocess_mode="livemin")
REDIS_ERRORS = Counter(f"{NS}_redis_errors_total", "Redis calls that failed or ran over budget")
REDIS_LATENCY = Histogram(f"{NS}_redis_latency_seconds", "Redis round-trip time of the limit "
                          "check", buckets=REDIS_BUCKETS)
QUOTA_REMAINING = Gauge(f"{NS}_quota_remaining_ratio", "Share of a team's quota left (0..1)",
                        ["team"], multiprocess_mode="livemin")


def exposition() -> tuple[bytes, str]:
    """The text exposition, aggregated over worker processes in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _Finished:
    """The children one finished-request label combination (model, provider, status, team)
    touches, and what this loop iteration's requests of that combination add to them. Each
    child is created on first use: a series that was never observed is never exported."""

    __slots__ = ("requests", "duration", "overhead", "ttft", "tokens", "cost",
                 "n", "durations", "overheads", "ttfts", "token_sums", "cost_sum")

    def __init__(self, requests: Any) -> None:
        self.requests = requests
        self.duration: Any = None
        self.overhead: Any = None
        self.ttft: Any = None
        self.tokens: list[Any] = [None, None, None, None]  # prompt, completion, cached, reasoning
        self.cost: Any = None
        self.n = 0  # held: requests, observations, sums not yet in the children
        self.durations: list[float] = []
        self.overheads: list[float] = []
        self.ttfts: list[float] = []
        self.token_sums = [0, 0, 0, 0]
        self.cost_sum = 0.0


def at_iteration_end(callback: Callable[[], None]) -> None:
    """Run `callback` when the current event-loop iteration ends; outside a loop, now."""
    try:
        loop = running_loop()
    except RuntimeError:
        callback()
    else:
        loop.call_soon(callback)


class HeldHistogram:
    """`observe` for a busy histogram (one sample a request): the samples of one event-loop
    iteration are added together when it ends (`observe_many`); outside a loop, at once."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self._held: list[float] = []

    def observe(self, value: float) -> None:
        held = self._held
        held.append(value)
        if len(held) == 1:
            at_iteration_end(self.flush)

    def flush(self) -> None:
        held, self._held = self._held, []
        if held:
            observe_many(self.child, held)


def observe_many(child: Any, values: list[float]) -> None:
    """`child.observe(v)` for each value, with one increment per bucket touched and one of the
    sum (prometheus_client takes a lock per increment). Falls back to `observe` when the
    histogram child does not have the attributes this relies on."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) == 1:
        for v in values:
            child.observe(v)
        return
    counts: dict[int, int] = {}
    for v in values:
        i = bisect_left(bounds, v)  # the first bound >= v, as `observe` picks it
        counts[i] = counts.get(i, 0) + 1
    for i, c in counts.items():
        if i < len(buckets):
            buckets[i].inc(c)
    total.inc(sum(values))


TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")


class Metrics:
    """Per-app label policy plus cached children (label lookups are the costly part)."""

    def __init__(self, teams: Iterable[str], max_models: int = 200) -> None:
        self.teams = frozenset(teams)
        self.max_models = max_models
        self._models: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}
        self._finished: dict[tuple[str, str, int, str], _Finished] = {}
        self._held: list[_Finished] = []  # combinations with samples not yet added

    def configure(self, teams: Iterable[str], max_models: int) -> None:
        """A reloaded config's label policy (teams added by the reload get their own label)."""
        self.teams = frozenset(teams)
        self.max_models = max_models

    def model_label(self, model: str, wildcard: bool) -> str:
        if not wildcard or model in self._models:
            return model
        if len(self._models) < self.max_models:
            self._models.add(model)
            return model
        return "other"

    def team_label(self, team: str) -> str:
        if not team:
            return "none"
        return team if team in self.teams else "other"

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------ helpers used by the core
    def finished(self, model: str, provider: str, status: int, team: str, duration_s: float,
                 overhead_s: float | None, ttft_s: float | None,
                 tokens: tuple[int, int, int, int], cost_usd: float) -> None:
        """One finished request: its count, duration (when a provider answered), overhead,
        time to first token, and tokens by kind (prompt, completion, cached, reasoning) with
        their cost when prompt + completion > 0; the children of the combination looked up once.

        Inside an event loop the samples are held and added when the loop iteration ends, each
        combination's in one go (a busy gateway finishes several requests an iteration: one
        increment per child instead of one per request); outside one, at once."""
        key = (model, provider, status, team)
        f = self._finished.get(key)
        if f is None:
            f = self._finished[key] = _Finished(self._child(REQUESTS, model, provider, str(status)))
        if not f.n:
            self._held.append(f)
        f.n += 1
        if provider != "none":
            if f.duration is None:
                f.duration = self._child(DURATION, model, provider)
            f.durations.append(duration_s)
        if overhead_s is not None:
            if f.overhead is None:
                f.overhead = self._child(OVERHEAD, model)
            f.overheads.append(max(overhead_s, 0.0))
        if ttft_s is not None:
            if f.ttft is None:
                f.ttft = self._child(TTFT, model, provider)
            f.ttfts.append(ttft_s)
        if tokens[0] + tokens[1]:
            self._count_tokens(f, model, provider, team, tokens, cost_usd)
        if len(self._held) == 1 and f.n == 1:
            at_iteration_end(self.flush)

    def flush(self) -> None:
        """Add the held samples to their children (the loop calls this once an iteration)."""
        held, self._held = self._held, []
        for f in held:
            f.requests.inc(f.n)
            f.n = 0
            for child, values in ((f.duration, f.durations), (f.overhead, f.overheads),
                                  (f.ttft, f.ttfts)):
                if values:
                    observe_many(child, values)
                    values.clear()
            sums = f.token_sums
            for i in range(4):
                if sums[i]:
                    f.tokens[i].inc(sums[i])
                    sums[i] = 0
            if f.cost_sum:
                f.cost.inc(f.cost_sum)
                f.cost_sum = 0.0

    def _count_tokens(self, f: _Finished, model: str, provider: str, team: str,
                      tokens: tuple[int, int, int, int], cost_usd: float) -> None:
        children, sums = f.tokens, f.token_sums
        for i, n in enumerate(tokens):
            if n:
                if children[i] is None:
                    children[i] = self._child(TOKENS, model, provider, team, TOKEN_KINDS[i])
                sums[i] += n
        if cost_usd:
            if f.cost is None:
                f.cost = self._child(COST, model, team)
            f.cost_sum += cost_usd

    def rate_limited(self, scope: str, team: str) -> None:
        self._child(RATE_LIMITED, scope, team).inc()

    def retry(self, provider: str, reason: str) -> None:
        self._child(RETRIES, provider, reason).inc()

    def upstream_error(self, provider: str, reason: str) -> None:
        self._child(UPSTREAM_ERRORS, provider, reason).inc()

    def fallback(self, from_model: str, to_model: str) -> None:
        self._child(FALLBACKS, from_model, to_model).inc()

    def inflight(self, model: str) -> Any:
        return self._child(INFLIGHT, model)

    def provider_up(self, provider: str, up: bool) -> None:
        self._child(PROVIDER_UP, provider).set(1 if up else 0)

    def quota_remaining(self, team: str, ratio: float) -> None:
        """`quota_remaining_ratio{team}`; a team's ratio comes from `remaining_ratio()`."""
        self._child(QUOTA_REMAINING, self.team_label(team)).set(min(max(ratio, 0.0), 1.0))


def remaining_ratio(usage: Any) -> float | None:
    """Share left of one quota's current period, the tighter of tokens and USD; `usage` is a
    `gateway.limits.spec.QuotaUsage` (from the backend's `usage()`). None: nothing is capped."""
    shares = []
    if usage.limit_tokens:
        shares.append(1.0 - usage.tokens / usage.limit_tokens)
    if usage.limit_usd:
        shares.append(1.0 - usage.cost_usd / usage.limit_usd)
    return min(max(min(shares), 0.0), 1.0) if shares else None


def provider_health(routes: Any, balancer: Any) -> dict[str, bool]:
    """Provider name -> in rotation: any of its targets that can be checked is up (half-open counts
    as up). Targets are the listed models' (`RouteTable.listed_models()`); a provider with no
    such target (only behind a wildcard route without a `models:` list) counts as up: nothing
    says it is failing. The status page shows this; `provider_up` should export the same."""
    seen: dict[str, bool] = {}
    for mid in routes.listed_models():
        try:
            targets = routes.resolve(mid).targets
        except Exception:  # a listed model that no longer resolves: nothing to check
            continue
        for t in targets:
            name = t.provider.name
            seen[name] = seen.get(name, False) or balancer.is_up(t)
    return {name: seen.get(name, True) for name in routes.providers}
