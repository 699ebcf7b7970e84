"""The targets: how each one is started, pinned, checked for readiness and validated once.

direct            the fast mock itself (baseline; its CPU is the mock's)
passthrough       tests/bench/passthrough.py, the bare aiohttp proxy (the Python limit)
modelyard-redis   Modelyard, every feature on, state in Redis
modelyard-memory  Modelyard, every feature on, in-process state
litellm           LiteLLM's proxy in .bench/litellm-venv (full runs, when it installs)
modelyard-redis-w2  the Redis config with --workers 2 (throughput scaling only)
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.procs import HarnessError, Proc, rss_mib
from tests.bench.scenarios import UPSTREAM_KEY, Request, Scenario
from tests.redis_fixture import free_port

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LITELLM_VENV = REPO / ".bench" / "litellm-venv"


@dataclass(frozen=True)
class CpuPlan:
    sut: str  # the system under test (one CPU)
    aux: str  # mock, Redis, wrk, the TTFB client and this harness
    sut2: str  # for --workers 2
    note: str = ""

    @property
    def aux_count(self) -> int:
        return len(self.aux.split(",")) if self.aux else 1


def plan_cpus() -> CpuPlan:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return CpuPlan("", "", "", "one CPU only: nothing pinned, figures are indicative")
    if len(cpus) < 4:
        return CpuPlan(str(cpus[0]), ",".join(map(str, cpus[1:])), ",".join(map(str, cpus)),
                       f"{len(cpus)} CPUs: the --workers 2 run shares CPUs with the generator")
    return CpuPlan(str(cpus[0]), ",".join(map(str, cpus[2:])), f"{cpus[0]},{cpus[1]}")


@dataclass
class Target:
    name: str
    port: int
    native: bool  # receives the upstream's own requests (direct, passthrough)
    proc: Proc
    ready_path: str
    only: tuple[str, ...] = ()  # scenario names it runs; empty: all
    idle_rss_mib: float = 0.0
    loaded_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    uses_redis: bool = False  # its state is in the benchmark's redis-server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runs(self, sc: Scenario) -> bool:
        return not self.only or sc.name in self.only

    def start(self, ready_timeout_s: float) -> None:
        self.proc.start()
        self.proc.wait_ready(self.url + self.ready_path, ready_timeout_s)


@dataclass
class Bench:
    """What every target shares: temp dir, CPUs, the mock's port, keys, Redis URL."""

    tmp: Path
    cpus: CpuPlan
    mock_port: int
    gateway_key: str
    master_key: str
    redis_url: str = ""

    def proc(self, name: str, argv: list[str], cpus: str, env: dict[str, str] | None = None
             ) -> Proc:
        return Proc(name, argv, cpus, self.tmp / f"{name}.log", env=env or {})


def mock_target(b: Bench, chunk_gap_ms: float) -> Target:
    argv = [sys.executable, "-m", "tests.bench.fastmock", "--port", str(b.mock_port),
            "--chunk-gap-ms", str(chunk_gap_ms)]
    return Target("direct", b.mock_port, True, b.proc("fastmock", argv, b.cpus.aux), "/readyz")


def passthrough_target(b: Bench) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "tests.bench.passthrough", "--port", str(port),
            "--upstream", f"http://127.0.0.1:{b.mock_port}"]
    return Target("passthrough", port, True, b.proc("passthrough", argv, b.cpus.sut), "/readyz")


def modelyard_target(b: Bench, *, redis: bool, workers: int = 1) -> Target:
    port = free_port()
    name = "modelyard-redis" if redis else "modelyard-memory"
    if workers > 1:
        name += f"-w{workers}"
    env = {"BENCH_PORT": str(port), "BENCH_REDIS_URL": b.redis_url if redis else "",
           "BENCH_MASTER_KEY": b.master_key, "BENCH_GATEWAY_KEY": b.gateway_key,
           "BENCH_UPSTREAM_PORT": str(b.mock_port), "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
           "BENCH_USAGE_JSONL": str(b.tmp / f"{name}-usage.jsonl"), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, "-m", "gateway", "serve", "--config",
            str(HERE / "configs" / "modelyard.yaml"), "--port", str(port)]
    cpus = b.cpus.sut
    if workers > 1:
        mp = b.tmp / f"{name}-metrics"
        mp.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(mp)
        argv += ["--workers", str(workers)]
        cpus = b.cpus.sut2
    return Target(name, port, False, b.proc(name, argv, cpus, env), "/readyz", uses_redis=redis)


def litellm_target(b: Bench) -> Target:
    port = free_port()
    text = (HERE / "configs" / "litellm.yaml").read_text()
    text = text.replace("${BENCH_UPSTREAM_PORT}", str(b.mock_port)) \
        .replace("${BENCH_UPSTREAM_KEY}", UPSTREAM_KEY)
    cfg = b.tmp / "litellm.yaml"
    cfg.write_text(text)
    env = {"LITELLM_MASTER_KEY": b.gateway_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "NO_DOCS": "True", "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    return Target("litellm", port, False, b.proc("litellm", argv, b.cpus.sut, env),
                  "/health/liveliness")


def install_litellm(timeout_s: float = 1200) -> str:
    """'' when LiteLLM's proxy is (or got) installed in its own venv, else why not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return ""
    log.warning("installing LiteLLM's proxy into %s (once)", LITELLM_VENV)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True,
                       capture_output=True, timeout=300)
        done = subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q",
                               "--disable-pip-version-check", "litellm[proxy]"],
                              check=False, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"LiteLLM could not be installed: {exc}"
    if done.returncode != 0 or not exe.exists():
        return f"`pip install 'litellm[proxy]'` failed: {done.stderr.strip()[-300:]}"
    return ""


def litellm_version() -> str:
    pip = LITELLM_VENV / "bin" / "pip"
    try:
        out = subprocess.run([str(pip), "show", "litellm"], check=False, capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Version:")), "")


def check_reply(t: Target, sc: Scenario, req: Request) -> None:
    """One request by hand before any load: a wrong answer is a harness error, not a figure."""
    hdrs = {"Content-Type": "application/json", **req.headers}
    r = urllib.request.Request(t.url + req.path, data=req.body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        raise HarnessError(f"{t.name} / {sc.name}: request failed: {exc}") from exc
    events = body.count(b"data:")
    want = b'"content"' if (t.native and sc.anthropic) else b'"choices"'
    if status != 200 or want not in body or (sc.stream and events < 20):
        raise HarnessError(f"{t.name} / {sc.name}: HTTP {status}, {events} SSE events; body: "
                           f"{body[:300]!r}\nlog tail:\n{t.proc.tail()}")


def sample_rss(t: Target) -> float:
    return rss_mib(t.proc.pid)
