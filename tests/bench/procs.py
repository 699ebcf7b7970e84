"""Processes under test: spawn pinned to CPUs, wait for readiness, read CPU time and RSS, stop.

CPU time is utime+stime from /proc/<pid>/stat summed over the process and its descendants
(`--workers N` and LiteLLM's uvicorn run children); RSS is VmRSS from /proc/<pid>/status, summed
the same way.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(RuntimeError):
    """The harness itself broke (a target did not start, a run failed): exit non-zero."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in descendants(pid):
        f = _stat_fields(p)
        if f is not None:
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


def rss_mib(pid: int) -> float:
    kib = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
        except OSError:
            continue
    return kib / 1024


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Proc:
    """One pinned child process (its own session, so the whole group can be stopped)."""

    name: str
    argv: list[str]
    cpus: str  # taskset list, "" for no pinning
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        argv = (["taskset", "-c", self.cpus] if self.cpus else []) + self.argv
        env = {**os.environ, **self.env}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it after fork
        try:
            self.started_at = time.perf_counter()
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        finally:
            logf.close()
        return self

    def wait_ready(self, url: str, timeout_s: float) -> float:
        """Seconds from spawn to the first 200 from `url`; HarnessError on exit or timeout."""
        deadline = self.started_at + timeout_s
        while time.perf_counter() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.popen.returncode} before it "
                                   f"was ready; log: {self.log_path}\n{self.tail()}")
            if http_ok(url, timeout=0.5):
                self.ready_s = time.perf_counter() - self.started_at
                return self.ready_s
            time.sleep(0.005)
        raise HarnessError(f"{self.name} was not ready within {timeout_s:.0f} s at {url}; "
                           f"log: {self.log_path}\n{self.tail()}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, grace_s: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, grace_s)
        try:  # whatever is left of its group (workers, uvicorn children)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(5)
        self.popen = None
