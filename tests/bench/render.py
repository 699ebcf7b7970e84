"""The benchmark's Markdown: machine and versions, one table per scenario, TTFB, start-up and
RSS, workers, the limit check's cost, the targets with PASS/MISS, notes."""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import math
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path

from tests.bench import report as rp
from tests.bench.runner import Results
from tests.bench.scenarios import SCENARIOS
from tests.bench.targets import REPO, litellm_version

ORDER = ("direct", "passthrough", rp.FULL, rp.MEMORY, rp.LITELLM, rp.W2)


def _cmd(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "missing"
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                              cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) \
        else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine(res: Results) -> list[str]:
    def ver(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "?"

    commit = _cmd(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (+ uncommitted changes)" if _cmd(["git", "status", "--porcelain"]) not in ("?", "") \
        else ""
    ll = litellm_version() if res.options.litellm else ""
    c = res.cpus
    return [
        (f"- Date: {dt.datetime.fromtimestamp(res.started, dt.UTC):%Y-%m-%d %H:%M} UTC; "
         f"Modelyard commit {commit}{dirty}; run took {res.elapsed_s:.0f} s"),
        f"- Machine: {_cpu_model()}, {os.cpu_count()} CPUs; Linux {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {ver('aiohttp')}, uvloop {ver('uvloop')}"
        f", orjson {ver('orjson')}, httptools {ver('httptools')}; "
        f"{_cmd(['redis-server', '--version'])[:40]}; "
        f"{_cmd(['wrk', '--version'])[:30]}" + (f"; LiteLLM {ll}" if ll else ""),
        (f"- Pinning: system under test on CPU {c.sut or 'any'}; mock, Redis, wrk, TTFB client "
         f"on CPU {c.aux or 'any'}; --workers 2 on CPUs {c.sut2 or 'any'}"),
        (f"- {res.options.rounds} round(s) of {res.options.duration_s:.0f} s per target and "
         f"scenario, interleaved (target order rotated each round) after a "
         f"{res.options.warmup_s:.0f} s warm-up; medians shown, each round in the last column"),
    ]


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None or math.isnan(x) else format(x, fmt)


def scenario_table(agg: dict[tuple[str, str], rp.Agg], sc: str) -> list[str]:
    d, p = agg.get(("direct", sc)), agg.get((rp.PASS_TARGET, sc))
    rows = [("| target | RPS | p50 ms | p90 ms | p99 ms | +p50 ms | +p99 ms | CPU µs/req "
             "| CPU × pass | RPS × pass | errors | rounds: RPS / CPU µs |"),
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for t in ORDER:
        a = agg.get((t, sc))
        if a is None:
            continue
        direct = t == "direct"
        rounds = ", ".join(f"{r:.0f}/{c:.0f}" for r, c in zip(a.rounds_rps, a.rounds_cpu))
        cpu = _f(a.cpu_us, ".0f") + (" (mock)" if direct else "")
        rows.append(
            f"| {t} | {a.rps:.0f} | {_f(a.p50)} | {_f(a.p90)} | {_f(a.p99)} "
            f"| {'' if direct else _f(a.p50 - d.p50 if d else None)} "
            f"| {'' if direct else _f(a.p99 - d.p99 if d else None)} | {cpu} "
            f"| {'' if direct else _f(rp._ratio(a.cpu_us, p.cpu_us if p else None))} "
            f"| {'' if direct else _f(rp._ratio(a.rps, p.rps if p else None))} "
            f"| {a.errors} | {rounds} |")
    return rows


def ttfb_table(res: Results) -> list[str]:
    rows = [("| scenario | target | TTFB p50 ms | TTFB p99 ms | streams | min events/stream "
             "| errors |"), "|---|---|--:|--:|--:|--:|--:|"]
    for sc in SCENARIOS:
        for t in ORDER:
            xs = [x for x in res.ttfb if x.target == t and x.scenario == sc.name]
            if xs:
                rows.append(f"| {sc.name} | {t} | {statistics.median(x.p50_ms for x in xs):.2f} "
                            f"| {statistics.median(x.p99_ms for x in xs):.2f} "
                            f"| {sum(x.streams for x in xs)} | {min(x.min_events for x in xs)} "
                            f"| {sum(x.errors for x in xs)} |")
    return rows


def startup_table(res: Results) -> list[str]:
    rows = ["| target | ready ms (spawn → 200) | idle RSS MiB | RSS after load MiB | CPUs |",
            "|---|--:|--:|--:|---|"]
    for t in ORDER:
        i = res.targets.get(t)
        if i is not None:
            ready = _f(i.ready_s * 1000 if i.ready_s is not None else None, ".0f")
            rows.append(f"| {t} | {ready} | {i.idle_rss_mib:.1f} | {_f(i.loaded_rss_mib, '.1f')} "
                        f"| {i.pinned or 'any'} |")
    return rows


def extras(res: Results, agg: dict[tuple[str, str], rp.Agg]) -> list[str]:
    out = []
    w1, w2 = agg.get((rp.FULL, "ns_c64")), agg.get((rp.W2, "ns_c64"))
    if w1 and w2:
        out.append(f"- `--workers` (Redis config, non-streaming c=64): 1 worker {w1.rps:.0f} RPS,"
                   f" 2 workers {w2.rps:.0f} RPS ({w2.rps / w1.rps:.2f}×); CPU/request "
                   f"{w1.cpu_us:.0f} vs {w2.cpu_us:.0f} µs")
    r, m = agg.get((rp.FULL, "ns_c1")), agg.get((rp.MEMORY, "ns_c1"))
    if r and m:
        out.append(f"- Limit check, Redis vs in-process (issue 5; c=1, Redis minus in-process): "
                   f"p50 {r.p50 - m.p50:+.3f} ms, p99 {r.p99 - m.p99:+.3f} ms, CPU "
                   f"{r.cpu_us - m.cpu_us:+.0f} µs/request")
    shared = [f"{sc} {a.redis_us:.0f} µs" for (t, sc), a in sorted(agg.items())
              if t == rp.FULL and not math.isnan(a.redis_us)]
    if shared:
        out.append("- Redis CPU per request (the one Redis every replica shares, what bounds a "
                   "fleet), modelyard-redis: " + ", ".join(shared))
    busy = max((a.mock_busy for (t, _), a in agg.items() if t != "direct"), default=0.0)
    out.append(f"- The mock's busiest share of its CPU while serving a gateway: {busy:.0%} "
               "(well below 100 %: the upstream was not the limit)" if busy < 0.8 else
               f"- WARNING: the mock used {busy:.0%} of its CPU in some run: it may have been "
               "the limit there")
    for name, obs in res.observed.items():
        out.append(f"- Observed in {name}: " + ", ".join(f"{k} {v}" for k, v in obs.items()))
    return out


def markdown(res: Results) -> str:
    agg = rp.aggregate(res)
    lines = ["# Modelyard benchmark", ""] + machine(res) + [""]
    for sc in SCENARIOS:
        if any(k[1] == sc.name for k in agg):
            lines += [f"## {sc.title} (`{sc.name}`)", ""] + scenario_table(agg, sc.name) + [""]
    lines += ["## Time to first byte (streams; aiohttp client at c=16)", ""] + ttfb_table(res)
    lines += ["", "## Start-up and memory", ""] + startup_table(res)
    lines += ["", "## Scaling, limit check, sanity", ""] + extras(res, agg)
    lines += ["", "## Targets (issue 9)", "", "| target | measured | limit | result |",
              "|---|---|---|---|"]
    lines += [f"| {c.what} | {c.value} | {c.limit} | **{c.status}** |"
              for c in rp.checks(res, agg)]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"
