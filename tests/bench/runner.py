"""The benchmark run: start every target, warm up, interleave the rounds, stop everything.

Everything started here is stopped in `finally` blocks (process groups, SIGTERM then SIGKILL),
binds to 127.0.0.1 only, and every wait is bounded.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import targets as tg
from tests.bench.measure import Runner, Sample, TtfbSample
from tests.bench.procs import HarnessError
from tests.bench.scenarios import SCENARIOS, Scenario, request_for
from tests.bench.wrk import ensure_tool, ensure_wrk
from tests.redis_fixture import RedisServer, free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    rounds: int = 3
    duration_s: float = 8.0
    warmup_s: float = 2.0
    ttfb_s: float = 2.0
    litellm: bool = True
    workers: bool = True
    soak_s: float = 0.0  # 0: no soak
    chunk_gap_ms: float = 1.0
    keep_tmp: bool = False


@dataclass
class TargetInfo:
    name: str
    ready_s: float | None
    idle_rss_mib: float
    loaded_rss_mib: float = 0.0
    pinned: str = ""


@dataclass
class Results:
    options: Options
    cpus: tg.CpuPlan
    samples: list[Sample] = field(default_factory=list)
    ttfb: list[TtfbSample] = field(default_factory=list)
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    soak: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    elapsed_s: float = 0.0


def _start(t: tg.Target, res: Results, timeout_s: float) -> None:
    log.info("starting %s", t.name)
    t.start(timeout_s)
    time.sleep(0.5)  # let start-up work that follows readiness settle before the idle RSS
    res.targets[t.name] = TargetInfo(t.name, t.proc.ready_s, tg.sample_rss(t), pinned=t.proc.cpus)


def _gateways(b: tg.Bench, opts: Options, no_litellm: str, res: Results) -> list[tg.Target]:
    out = [tg.passthrough_target(b), tg.modelyard_target(b, redis=True),
           tg.modelyard_target(b, redis=False)]
    if no_litellm:
        res.notes.append(f"LiteLLM not measured: {no_litellm}")
    else:
        out.append(tg.litellm_target(b))
    if opts.workers:
        w2 = tg.modelyard_target(b, redis=True, workers=2)
        w2.only = ("ns_c64",)
        out.append(w2)
    return out


def _start_all(ts: list[tg.Target], res: Results) -> list[tg.Target]:
    started = []
    for t in ts:
        try:
            _start(t, res, 240 if t.name == "litellm" else 60)
        except HarnessError as exc:
            if t.name != "litellm":
                raise
            t.proc.stop()
            res.notes.append(f"LiteLLM not measured: it did not start ({str(exc)[:300]})")
            continue
        started.append(t)
    return started


def _preflight_and_warm(run: Runner, ts: list[tg.Target], opts: Options) -> None:
    for t in ts:
        for sc in SCENARIOS:
            if t.runs(sc):
                tg.check_reply(t, sc, request_for(sc, t.native, run.gateway_key))
    for t in ts:
        for sc in SCENARIOS:
            if not t.runs(sc) or (opts.smoke and sc.name not in ("ns_c16",) + t.only):
                continue
            log.info("warm-up %s / %s", t.name, sc.name)
            run.load(t, sc, opts.warmup_s)


def _round(run: Runner, ts: list[tg.Target], rnd: int, opts: Options, res: Results) -> None:
    for sc in SCENARIOS:
        order = ts[rnd % len(ts):] + ts[:rnd % len(ts)]  # rotate: no target always goes first
        for t in order:
            if not t.runs(sc):
                continue
            s = run.sample(t, sc, rnd, opts.duration_s)
            log.info("round %d %-20s %-18s %8.0f rps  p50 %6.2f ms  %6.0f us/req  errors %d",
                     rnd + 1, sc.name, t.name, s.rps, s.p50_ms, s.cpu_us, s.errors)
            res.samples.append(s)
            if sc.stream:
                res.ttfb.append(run.ttfb(t, sc, rnd, opts.ttfb_s))


def _observe(b: tg.Bench, ts: list[tg.Target], redis: RedisServer, res: Results) -> None:
    """What the gateways really did: usage records, access-log lines, Redis keys."""
    for t in ts:
        if not t.name.startswith("modelyard"):
            continue
        usage = b.tmp / f"{t.name}-usage.jsonl"
        try:
            lines = sum(1 for _ in usage.open("rb")) if usage.exists() else 0
            logs = sum(1 for ln in t.proc.log_path.open("rb") if b'"path"' in ln or b"access" in ln)
        except OSError:
            lines, logs = 0, 0
        res.observed[t.name] = {"usage_records": lines, "access_log_lines": logs}
    res.observed["redis"] = {"keys": redis.cli("DBSIZE")}


def _measure_all(run_: Runner, ts: list[tg.Target], opts: Options, res: Results) -> None:
    _preflight_and_warm(run_, ts, opts)
    for rnd in range(opts.rounds):
        _round(run_, ts, rnd, opts, res)
    for t in ts:
        res.targets[t.name].loaded_rss_mib = tg.sample_rss(t)
    if opts.soak_s > 0:
        soak_target = next(t for t in ts if t.name == "modelyard-redis")
        log.info("soak: %s at c=16 for %.0f s", soak_target.name, opts.soak_s)
        res.soak[soak_target.name] = run_.soak(soak_target, scenario("ns_c16"), opts.soak_s)


def run(opts: Options) -> Results:
    t0 = time.perf_counter()
    wrk = ensure_wrk()
    ensure_tool("redis-server", "redis-server")
    no_litellm = tg.install_litellm() if opts.litellm else "smoke mode or --no-litellm"
    cpus = tg.plan_cpus()
    res = Results(opts, cpus)
    if cpus.note:
        res.notes.append(cpus.note)
    if cpus.aux:
        os.sched_setaffinity(0, {int(c) for c in cpus.aux.split(",")})
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    b = tg.Bench(tmp, cpus, free_port(), gateway_key="sk-" + secrets.token_hex(24),
                 master_key="sk-" + secrets.token_hex(24))
    redis = RedisServer()
    mock = tg.mock_target(b, opts.chunk_gap_ms)
    everything: list[tg.Target] = [mock]
    try:
        mock.start(30)
        res.targets["direct"] = TargetInfo("direct", mock.proc.ready_s, tg.sample_rss(mock),
                                           pinned=cpus.aux)
        try:
            redis.start()
        except RuntimeError as exc:
            raise HarnessError(f"redis-server did not start: {exc}") from exc
        if redis.proc is not None and cpus.aux:
            os.sched_setaffinity(redis.proc.pid, {int(c) for c in cpus.aux.split(",")})
        b.redis_url = redis.url
        gateways = _gateways(b, opts, no_litellm, res)
        everything += gateways
        ts = [mock] + _start_all(gateways, res)
        runner = Runner(wrk, tmp, cpus.aux, cpus.aux_count, b.gateway_key, mock,
                        redis_pid=redis.proc.pid if redis.proc is not None else None)
        try:
            _measure_all(runner, ts, opts, res)
        finally:
            res.notes.extend(runner.notes)
        _observe(b, ts, redis, res)
    finally:
        for t in reversed(everything):
            t.proc.stop()
        redis.stop()
        if not opts.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(redis.dir, ignore_errors=True)
    res.elapsed_s = time.perf_counter() - t0
    return res


def smoke_options(**over: Any) -> Options:
    base = Options(smoke=True, rounds=1, duration_s=1.0, warmup_s=1.0, ttfb_s=0.5,
                   litellm=False, workers=True)
    return dataclasses.replace(base, **over)


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)
