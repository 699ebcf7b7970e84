"""Medians, ratios to the bare passthrough, PASS/MISS against issue 9's targets, and the tables.

Every figure is the median over rounds of one (target, scenario) pair; each round's RPS and CPU
per request are listed too. "+p50"/"+p99" are the target's percentile minus direct's at the same
scenario. Ratios use the passthrough measured in the same run.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tests.bench.measure import Sample
from tests.bench.runner import Results
from tests.bench.scenarios import SCENARIOS

PASS_TARGET = "passthrough"
FULL, MEMORY, LITELLM, W2 = "modelyard-redis", "modelyard-memory", "litellm", "modelyard-redis-w2"
CORE = ("direct", "passthrough", FULL, MEMORY, W2)  # errors here mean the harness is broken


@dataclass(frozen=True)
class Agg:
    rps: float
    p50: float
    p90: float
    p99: float
    cpu_us: float
    errors: int
    requests: int
    mock_busy: float
    rounds_rps: tuple[float, ...]
    rounds_cpu: tuple[float, ...]
    redis_us: float = float("nan")  # the Redis server's CPU per request (Redis targets)


@dataclass(frozen=True)
class Check:
    what: str
    value: str
    limit: str
    status: str  # PASS, MISS, n/a


def _med(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]  # a run that completed nothing has NaN figures
    return statistics.median(xs) if xs else float("nan")


def aggregate(res: Results) -> dict[tuple[str, str], Agg]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in res.samples:
        groups.setdefault((s.target, s.scenario), []).append(s)
    return {k: Agg(_med([s.rps for s in v]), _med([s.p50_ms for s in v]),
                   _med([s.p90_ms for s in v]), _med([s.p99_ms for s in v]),
                   _med([s.cpu_us for s in v]), sum(s.errors for s in v),
                   sum(s.requests for s in v), _med([s.mock_busy for s in v]),
                   tuple(s.rps for s in v), tuple(s.cpu_us for s in v),
                   _med([s.redis_us for s in v]))
            for k, v in groups.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return a / b


def _get(agg: dict[tuple[str, str], Agg], t: str, sc: str) -> Agg | None:
    return agg.get((t, sc))


def _cpu_check(agg: dict[tuple[str, str], Agg], what: str, t: str, sc: str, limit: float
               ) -> Check:
    a, p = _get(agg, t, sc), _get(agg, PASS_TARGET, sc)
    r = _ratio(a.cpu_us if a else None, p.cpu_us if p else None)
    if r is None:
        return Check(what, "not measured", f"≤ {limit}×", "n/a")
    value = f"{r:.2f}× ({a.cpu_us:.0f} vs {p.cpu_us:.0f} µs)"  # type: ignore[union-attr]
    return Check(what, value, f"≤ {limit}×", "PASS" if r <= limit else "MISS")


def _latency_checks(agg: dict[tuple[str, str], Agg], t: str) -> list[Check]:
    a, d = _get(agg, t, "ns_c1"), _get(agg, "direct", "ns_c1")
    if a is None or d is None:
        return [Check(f"{t}: added latency at c=1", "not measured", "", "n/a")]
    out = []
    for name, got, limit in (("p50", a.p50 - d.p50, 1.0), ("p99", a.p99 - d.p99, 3.0)):
        out.append(Check(f"{t}: added {name} latency at c=1", f"{got:+.2f} ms",
                         f"≤ {limit:.0f} ms", "PASS" if got <= limit else "MISS"))
    return out


def _startup_checks(res: Results, t: str) -> list[Check]:
    info = res.targets.get(t)
    if info is None:
        return []
    ready = info.ready_s if info.ready_s is not None else float("nan")
    return [Check(f"{t}: idle RSS", f"{info.idle_rss_mib:.1f} MiB", "≤ 80 MiB",
                  "PASS" if info.idle_rss_mib <= 80 else "MISS"),
            Check(f"{t}: ready (spawn → /readyz 200)", f"{ready * 1000:.0f} ms", "≤ 1000 ms",
                  "PASS" if ready <= 1.0 else "MISS")]


def _soak_check(res: Results) -> Check:
    pts = res.soak.get(FULL)
    if not pts:
        return Check("RSS flat across the 5-minute soak at c=16", "not run (use --soak)",
                     "± 10 %", "n/a")
    base = pts[0][1]
    worst = max(abs(r - base) / base for _, r in pts) * 100 if base else float("nan")
    return Check(f"RSS flat across the {pts[-1][0]:.0f} s soak at c=16 ({FULL})",
                 f"{base:.1f} → {pts[-1][1]:.1f} MiB (worst {worst:.1f} %)", "± 10 %",
                 "PASS" if worst <= 10 else "MISS")


def checks(res: Results, agg: dict[tuple[str, str], Agg]) -> list[Check]:
    out = [_cpu_check(agg, "non-streaming CPU/request, every feature on (Redis), c=16", FULL,
                      "ns_c16", 2.0),
           _cpu_check(agg, "non-streaming CPU/request, in-process backend, c=16", MEMORY,
                      "ns_c16", 1.5)]
    for t in (FULL, MEMORY):
        out.append(_cpu_check(agg, f"{t}: streaming CPU/stream, OpenAI-compatible", t,
                              "stream_openai_c16", 1.5))
        out.append(_cpu_check(agg, f"{t}: streaming CPU/stream, Anthropic translation", t,
                              "stream_anthropic_c16", 2.5))
    for t in (FULL, MEMORY):
        out += _latency_checks(agg, t)
    m, ll = _get(agg, FULL, "ns_c16"), _get(agg, LITELLM, "ns_c16")
    r = _ratio(m.rps if m else None, ll.rps if ll else None)
    out.append(Check("RPS vs LiteLLM's proxy, one core each, c=16",
                     f"{r:.1f}×" if r is not None else "LiteLLM not measured", "≥ 50×",
                     "n/a" if r is None else ("PASS" if r >= 50 else "MISS")))
    for t in (FULL, MEMORY):
        out += _startup_checks(res, t)
    out.append(_soak_check(res))
    return out


def harness_problems(res: Results) -> list[str]:
    """Reasons to exit non-zero: errors on our own targets, or streams that were not streams."""
    out = [f"{s.target} / {s.scenario} round {s.round + 1}: {s.errors} errors"
           for s in res.samples if s.errors and s.target in CORE]
    out += [f"{t.target} / {t.scenario}: {t.errors} TTFB-client errors" for t in res.ttfb
            if t.errors and t.target in CORE]
    out += [f"{t.target} / {t.scenario}: a stream had only {t.min_events} SSE events"
            for t in res.ttfb if t.min_events < 20 and t.target in CORE]
    return out


def scenario_titles() -> dict[str, str]:
    return {s.name: s.title for s in SCENARIOS}
