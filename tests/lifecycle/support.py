"""Real `python -m gateway serve` processes for the lifecycle tests: spawn, poll, signal, inspect.

Everything here polls with a deadline; nothing sleeps for a fixed time to wait for an effect.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-lifecycle-test-5b7e19c2"
AUTH = {"Authorization": f"Bearer {KEY}"}
POLL_S = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def mock_config(port: int, *, chunk_delay_ms: float = 0, grace_s: float = 10,
                metrics_port: int | None = None, jsonl: Path | None = None,
                redis_url: str = "", aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """One key, the in-process mock provider behind `mock/*`, optional aliases to it."""
    routes: dict[str, Any] = {"mock/*": {"targets": [{"provider": "local"}],
                                         "models": ["mock/echo"]}}
    for name, target in (aliases or {}).items():
        routes[name] = {"alias": target}
    return {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port,
                   "shutdown_grace_s": grace_s},
        "state": {"redis_url": redis_url},
        "auth": {"keys": [{"id": "life", "key": KEY, "team": "life"}]},
        "providers": {"local": {"adapter": "mock",
                                "options": {"latency_ms": 0, "chunk_delay_ms": chunk_delay_ms}}},
        "routes": routes,
        "default_model": "mock/echo",
        "usage": {"jsonl_path": str(jsonl) if jsonl else ""},
    }


def words(n: int) -> str:
    """A prompt whose mock echo streams back `n` content chunks."""
    return " ".join(f"w{i}" for i in range(n))


class Gateway:
    """One spawned gateway (or supervisor) process in its own session, logs in a file."""

    def __init__(self, config: Path, port: int, logfile: Path, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.config, self.port, self.logfile = config, port, logfile
        self.url = f"http://127.0.0.1:{port}"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MODELYARD_", "REDIS_URL", "PROMETHEUS_MULTIPROC"))}
        full_env.update(env or {})
        self.spawned_at = time.perf_counter()
        with open(logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                 "--port", str(port), "--log-format", "json", *args],
                cwd=ROOT, env=full_env, stdout=log, stderr=log, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill_all(self) -> None:
        """Test clean-up: SIGKILL the process group (the supervisor's workers included)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.logfile.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    async def wait_ready(self, timeout: float = 10.0, url: str | None = None) -> float:
        """Seconds from spawn to the first `/readyz` 200."""
        target = (url or self.url) + "/readyz"

        async def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                async with aiohttp.ClientSession() as s, \
                        s.get(target, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        await until(ready, timeout, "gateway ready", poll_s=0.005)
        return time.perf_counter() - self.spawned_at

    async def wait_exit(self, timeout: float) -> int:
        async def exited() -> bool:
            return self.proc.poll() is not None

        await until(exited, timeout, "gateway exit")
        return int(self.proc.returncode)

    async def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0,
                       what: str = "log line", count: int = 1) -> dict[str, Any]:
        """The `count`-th log record that matches, once it has been written."""
        found: list[dict[str, Any]] = []

        async def seen() -> bool:
            found[:] = [r for r in self.log_records() if predicate(r)]
            return len(found) >= count

        await until(seen, timeout, what)
        return found[count - 1]

    def cpu_s(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self, pid: int | None = None) -> int:
        for line in Path(f"/proc/{pid or self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


async def until(check: Callable[[], Any], timeout: float, what: str, *,
                poll_s: float = POLL_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(poll_s)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


async def metric_value(session: aiohttp.ClientSession, url: str, name: str,
                       labels: str = "") -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


class StreamReader:
    """A streamed chat completion read frame by frame in a task."""

    def __init__(self, session: aiohttp.ClientSession, url: str, model: str, prompt: str,
                 request_id: str = "") -> None:
        self.frames: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.error: BaseException | None = None
        self.first = asyncio.Event()
        self.ended_at = 0.0
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
        headers = dict(AUTH)
        if request_id:
            headers["x-request-id"] = request_id
        self.task = asyncio.ensure_future(self._run(session, url, body, headers))

    async def _run(self, session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                   headers: dict[str, str]) -> None:
        try:
            async with session.post(url + "/v1/chat/completions", json=body,
                                    headers=headers) as r:
                assert r.status == 200, await r.text()
                self.headers = dict(r.headers)
                async for line in r.content:
                    if line.strip():
                        self.frames.append(line.strip())
                        self.first.set()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.error = exc
        finally:
            self.ended_at = time.perf_counter()
            self.first.set()

    @property
    def done(self) -> bool:
        return bool(self.frames) and self.frames[-1] == b"data: [DONE]"

    def contents(self) -> list[str]:
        out = []
        for f in self.frames:
            if f.startswith(b"data: {"):
                for choice in json.loads(f[6:])["choices"]:
                    out.append(choice.get("delta", {}).get("content") or "")
        return out
