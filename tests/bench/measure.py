"""One measured run: wrk against a target while the target's CPU time is read before and after.

CPU per request = (utime+stime after - before) of the target's process tree / requests wrk
completed. `sut_busy` and `mock_busy` are CPU seconds / wall seconds of the target and of the
mock during the run: a mock near 1.0 would mean the upstream, not the target, was the limit.
`redis_us` is the Redis server's CPU per request during the run (NaN for targets without
Redis): every replica of a fleet shares one single-threaded Redis, so this bounds the fleet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.procs import HarnessError, cpu_seconds, rss_mib
from tests.bench.scenarios import Scenario, request_for
from tests.bench.targets import Target
from tests.bench.ttfb import measure_sync
from tests.bench.wrk import WrkResult, lua_script, run_wrk

SOAK_WARMUP_S = 60.0  # load before the soak's first RSS reading


@dataclass
class Sample:
    target: str
    scenario: str
    round: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float  # per request
    sut_busy: float
    mock_busy: float
    redis_us: float = float("nan")  # the Redis server's CPU per request (Redis targets only)


@dataclass
class TtfbSample:
    target: str
    scenario: str
    round: int
    p50_ms: float
    p99_ms: float
    streams: int
    min_events: int
    errors: int


PEER_RESTARTS = 3  # LiteLLM's proxy has segfaulted under load here (in libpython)


@dataclass
class Runner:
    """Runs wrk and the TTFB client for (target, scenario) pairs; scripts are cached."""

    wrk: str
    tmp: Path
    aux_cpus: str
    threads: int
    gateway_key: str
    mock: Target
    redis_pid: int | None = None  # the benchmark's redis-server (its CPU per request)
    restarts: dict[str, int] = field(default_factory=dict)  # peer restarts so far, by target
    notes: list[str] = field(default_factory=list)  # for the report
    scripts: dict[tuple[str, bool], Path] = field(default_factory=dict)

    def script(self, sc: Scenario, native: bool) -> Path:
        key = (sc.name, native)
        if key not in self.scripts:
            req = request_for(sc, native, self.gateway_key)
            stem = f"{sc.name}-{'native' if native else 'gateway'}"
            path = self.tmp / f"{stem}.lua"
            path.write_text(lua_script(req, self.tmp / f"{stem}.body"))
            self.scripts[key] = path
        return self.scripts[key]

    def url(self, t: Target, sc: Scenario) -> str:
        return t.url + request_for(sc, t.native, self.gateway_key).path

    def load(self, t: Target, sc: Scenario, duration_s: float
             ) -> tuple[WrkResult, float, float, float]:
        """wrk once; (result, CPU seconds of the target, of the mock, of Redis)."""
        if not t.proc.alive():
            self._revive(t, sc)
        pids = (t.proc.pid, self.mock.proc.pid, self.redis_pid)
        before = [cpu_seconds(p) if p else 0.0 for p in pids]
        res = run_wrk(self.wrk, self.url(t, sc), self.script(sc, t.native),
                      connections=sc.concurrency, duration_s=duration_s, cpus=self.aux_cpus,
                      threads=self.threads, timeout_s=10 if t.name != "litellm" else 30)
        after = [cpu_seconds(p) if p else 0.0 for p in pids]
        cpu, mock, redis = (a - b for a, b in zip(after, before))
        return res, cpu, mock, redis

    def _revive(self, t: Target, sc: Scenario) -> None:
        """A dead peer (LiteLLM) is started again, at most PEER_RESTARTS times a run, and the
        restart is noted in the report; one of ours dying fails the run."""
        done = self.restarts.get(t.name, 0)
        if t.name != "litellm" or done >= PEER_RESTARTS:
            raise HarnessError(f"{t.name} died; log tail:\n{t.proc.tail()}")
        self.restarts[t.name] = done + 1
        code = t.proc.popen.returncode if t.proc.popen is not None else None
        self.notes.append(f"{t.name} died (exit {code}) before {sc.name}; started again "
                          f"({done + 1} of at most {PEER_RESTARTS}); a round it died in "
                          "counts its failed requests as errors")
        t.proc.stop()
        t.start(240)

    def sample(self, t: Target, sc: Scenario, rnd: int, duration_s: float) -> Sample:
        res, cpu, mock_cpu, redis_cpu = self.load(t, sc, duration_s)
        nan = float("nan")
        per_req = cpu / res.requests * 1e6 if res.requests else nan
        redis_us = redis_cpu / res.requests * 1e6 if res.requests and t.uses_redis else nan
        wall = res.duration_s or duration_s
        lat = (res.p50_ms, res.p90_ms, res.p99_ms) if res.requests else (nan, nan, nan)
        return Sample(t.name, sc.name, rnd, res.rps, *lat, res.requests, res.errors, per_req,
                      cpu / wall, mock_cpu / wall, redis_us)

    def ttfb(self, t: Target, sc: Scenario, rnd: int, duration_s: float) -> TtfbSample:
        if not t.proc.alive():
            self._revive(t, sc)
        req = request_for(sc, t.native, self.gateway_key)
        out = measure_sync(t.url + req.path, req, concurrency=sc.concurrency,
                           duration_s=duration_s)
        vals = sorted(out.ttfb_ms)
        if not vals:
            raise HarnessError(f"{t.name} / {sc.name}: no stream completed ({out.first_error})")
        return TtfbSample(t.name, sc.name, rnd, pct(vals, 50), pct(vals, 99), len(vals),
                          min(out.events), out.errors)

    def soak(self, t: Target, sc: Scenario, total_s: float, step_s: float = 30.0
             ) -> list[tuple[float, float]]:
        """(elapsed s, RSS MiB) before and after each `step_s` of load, for `total_s`, after
        `SOAK_WARMUP_S` of load: bounded buffers fill first (the usage sink remembers the last
        10,000 request ids), so that the soak shows growth, not their filling."""
        self.load(t, sc, SOAK_WARMUP_S)
        points = [(0.0, rss_mib(t.proc.pid))]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < total_s - 1:
            step = min(step_s, total_s - (time.perf_counter() - t0))
            res, _, _, _ = self.load(t, sc, max(1.0, step))
            if res.errors:
                raise HarnessError(f"{t.name}: errors during the soak")
            points.append((time.perf_counter() - t0, rss_mib(t.proc.pid)))
        return points


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(p / 100 * len(sorted_vals) + 0.5) - 1))
    return sorted_vals[i]
