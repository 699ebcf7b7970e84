"""Real `redis-server` processes for tests: a standalone server and a 3-node cluster on loopback.

`make test` installs Debian's redis-server when it is missing; never a mock of Redis.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(max_port: int = 65535) -> int:
    """A free loopback port; cluster nodes need port + 10000 (their bus port) to be valid too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= max_port:
            return port


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start on port {port}")


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1; `stop()` and `start()` to simulate an outage."""

    port: int = field(default_factory=free_port)
    cluster: bool = False
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelyard-redis-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(self.dir / f"nodes-{self.port}.conf"), "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip()


@dataclass
class RedisCluster:
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=1"

    def start(self, n: int = 3) -> "RedisCluster":
        self.nodes = [RedisServer(port=free_port(55535), cluster=True).start() for _ in range(n)]
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "cluster_state:ok" in self.nodes[0].cli("cluster", "info"):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis cluster did not become ready")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
