"""wrk, the load generator: installed from Debian when missing, driven by a generated Lua script.

The script loads the request body from a file and its `done()` hook prints one JSON line with
the counts and the latency percentiles (microseconds), so nothing is scraped from wrk's text.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import HarnessError
from tests.bench.scenarios import Request

log = logging.getLogger(__name__)
MARK = "BENCHJSON "

_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def ensure_tool(exe: str, package: str) -> str:
    """`exe`'s path; installs Debian's `package` with apt-get when it is missing."""
    found = shutil.which(exe)
    if found:
        return found
    log.warning("%s is missing: installing Debian's %s with apt-get", exe, package)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    install = sudo + ["apt-get", "install", "-y", "-qq", package]
    for cmd in (install, sudo + ["apt-get", "update", "-qq"], install):
        try:
            subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s: %s", " ".join(cmd), exc)
        found = shutil.which(exe)
        if found:
            return found
    raise HarnessError(f"{exe} is not installed and `apt-get install {package}` failed")


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


def lua_script(req: Request, body_path: Path) -> str:
    body_path.write_bytes(req.body)
    lines = [f'local f = assert(io.open("{body_path}", "rb"))', "wrk.body = f:read(\"*a\")",
             "f:close()", 'wrk.method = "POST"',
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in req.headers.items()]
    return "\n".join(lines) + "\n" + _DONE


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int  # socket errors (connect/read/write/timeout) plus non-2xx/3xx answers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    rps: float


def run_wrk(wrk: str, url: str, script: Path, *, connections: int, duration_s: float,
            cpus: str, threads: int = 1, timeout_s: float = 10.0) -> WrkResult:
    argv = (["taskset", "-c", cpus] if cpus else []) + [
        wrk, f"-t{max(1, min(threads, connections))}", f"-c{connections}",
        f"-d{max(1, round(duration_s))}s", f"--timeout={timeout_s:.0f}s", "-s", str(script), url]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True,
                              timeout=duration_s + 60)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"wrk did not finish: {' '.join(argv)}") from exc
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise HarnessError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}\n"
                           f"{done.stdout[-500:]}")
    d = json.loads(line[len(MARK):])
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return WrkResult(requests=d["requests"], duration_s=secs, errors=errors,
                     p50_ms=d["p50"] / 1000, p90_ms=d["p90"] / 1000, p99_ms=d["p99"] / 1000,
                     mean_ms=d["mean"] / 1000, rps=d["requests"] / secs if secs else 0.0)
