"""Gateway processes for the multi-replica tests: `python -m gateway serve --config F --port P`."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.redis_fixture import free_port

ROOT = Path(__file__).resolve().parents[2]


def _ready(port: int, master_key: str) -> bool:
    """Ready, and ours: the admin API answers our master key (another test's server that took
    the port between `free_port()` and our bind would not)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
            if r.status != 200:
                return False
        req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/keys",
                                     headers={"Authorization": f"Bearer {master_key}"})
        with urllib.request.urlopen(req, timeout=0.5) as r:
            return bool(r.status == 200)
    except Exception:
        return False


@dataclass
class Replicas:
    """N gateway processes on one config file (sharing `state.redis_url`)."""

    config: dict[str, Any]
    n: int = 3
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelyard-e2e-")))
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def start(self, timeout_s: float = 20.0) -> "Replicas":
        path = self.dir / "gateway.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.ports = [free_port() for _ in range(self.n)]
        for i, port in enumerate(self.ports):
            log = open(self.dir / f"gateway-{i}.log", "wb")  # noqa: SIM115 (closed with the proc)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port",
                 str(port), "--host", "127.0.0.1", "--log-format", "text"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + timeout_s
        pending = set(self.ports)
        while pending:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise RuntimeError(f"gateway {i} exited: {self.log(i)[-2000:]}")
            master = self.config["auth"]["master_key"]
            pending = {port for port in pending if not _ready(port, master)}
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"gateways on {sorted(pending)} not ready in {timeout_s}s")
            if pending:
                time.sleep(0.05)
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"gateway {i} exited: {self.log(i)[-2000:]}")
        return self

    def log(self, i: int) -> str:
        return (self.dir / f"gateway-{i}.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
