"""Start-up time and idle memory with the shipped config; `--workers` with and without Redis."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import aiohttp

from tests.lifecycle.support import (
    AUTH, ROOT, Gateway, free_port, mock_config, refuses_connections, until, write_yaml,
)

SHIPPED = ROOT / "config" / "gateway.yaml"
MiB = 1024
DEMO = {"Authorization": "Bearer sk-modelyard-demo"}  # the shipped config's local demo key


async def test_ready_within_a_second_and_small_idle_footprint(
        spawn: Callable[..., Gateway]) -> None:
    """Wall time from spawn to the first /readyz 200 must be under 1 s. The machine is shared
    with other test runs, so: the best of three tries, and the wall-time bound stretches by the
    CPU contention (load average per CPU). The CPU time the process used until it was ready does
    not depend on that contention, and is held to the 1 s bound as it is."""
    walls, cpus = [], []
    for attempt in range(3):
        port = free_port()
        gw = spawn(SHIPPED, port)
        walls.append(await gw.wait_ready())
        cpus.append(gw.cpu_s())
        if min(walls) < 0.8 or attempt == 2:
            break
        gw.signal(signal.SIGTERM)
        assert await gw.wait_exit(10) == 0
    contention = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    print(f"ready after {', '.join(f'{t * 1000:.0f}' for t in walls)} ms from spawn, "
          f"CPU {', '.join(f'{c * 1000:.0f}' for c in cpus)} ms, contention {contention:.1f}")
    assert min(cpus) < 1.0
    assert min(walls) < 1.0 * contention
    await _chat_ok(gw.url, "mock/echo", DEMO, 20)
    rss = gw.rss_kib()
    print(f"idle RSS after 20 requests: {rss / MiB:.1f} MiB")
    assert rss < 120 * MiB
    gw.signal(signal.SIGTERM)
    assert await gw.wait_exit(10) == 0


def workers_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return sorted(out)


def served_by(port: int, pids: list[int]) -> int:
    """Open a fresh connection, get an answer on it, and return the worker pid that holds the
    server side of that very connection (found through /proc/net/tcp and the workers' fds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        client_port = s.getsockname()[1]
        want_local, want_remote = f"0100007F:{port:04X}", f"0100007F:{client_port:04X}"
        inode = ""
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == want_local and f[2] == want_remote:
                inode = f[9]
        assert inode, "server side of the connection not found"
        for pid in pids:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
    raise AssertionError("no worker holds the connection")


async def two_workers(spawn: Callable[..., Gateway], redis_url: str) -> tuple[Gateway, int]:
    """A `serve --workers 2` supervisor on a free port, with both workers up."""
    port = free_port()
    gw = spawn(mock_config(port, redis_url=redis_url), port, args=("--workers", "2"))
    await gw.wait_ready()

    async def both_up() -> bool:
        return len(workers_of(gw.pid)) == 2

    await until(both_up, 10, "two workers")
    return gw, port


async def test_two_workers_both_serve_and_stop_on_sigterm(
        spawn: Callable[..., Gateway], redis_url: str) -> None:
    gw, port = await two_workers(spawn, redis_url)
    pids = workers_of(gw.pid)
    seen: set[int] = set()

    async def both_served() -> bool:
        seen.add(served_by(port, pids))
        return seen == set(pids)

    await until(both_served, 10, "both workers to answer", poll_s=0)
    # SIGHUP to the supervisor reaches every worker: each one reloads.
    write_yaml(gw.config, mock_config(port, redis_url=redis_url, aliases={"hup": "mock/echo"}))
    gw.signal(signal.SIGHUP)
    await gw.wait_log(lambda r: r["msg"] == "config reloaded", 5, count=2)
    await _chat_ok(gw.url, "hup", AUTH, 4)
    reloaded_pids = {r["pid"] for r in gw.log_records() if r["msg"] == "config reloaded"}
    gw.signal(signal.SIGTERM)
    assert await gw.wait_exit(15) == 0, gw.log_text()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert refuses_connections(port)
    assert reloaded_pids == set(pids)
    stopped = [r for r in gw.log_records() if r["msg"] == "stopped"]
    assert len(stopped) == 2, "both workers drained and stopped"


async def test_a_crashed_worker_stops_the_set_with_exit_1(
        spawn: Callable[..., Gateway], redis_url: str) -> None:
    gw, port = await two_workers(spawn, redis_url)
    first, second = workers_of(gw.pid)
    os.kill(first, signal.SIGKILL)
    assert await gw.wait_exit(15) == 1
    assert not Path(f"/proc/{second}").exists()
    assert "worker exited on its own" in gw.log_text()


async def test_workers_without_redis_are_refused(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_yaml(tmp_path / "gateway.yaml", mock_config(port))
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--workers", "2",
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 2
    assert b"--workers > 1 needs state.redis_url" in err, err
    assert time.perf_counter() - t0 < 5
    assert refuses_connections(port)


async def test_port_in_use_exits_1_with_a_clear_log_line(spawn: Callable[..., Gateway]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gw = spawn(mock_config(port), port)
        assert await gw.wait_exit(15) == 1
    line = await gw.wait_log(lambda r: r["msg"].startswith("cannot listen"), 1)
    assert "address already in use" in line["msg"] and line["port"] == port


def test_gc_is_tuned_once_ready() -> None:
    import gc

    from gateway.serve import GC_GEN0_THRESHOLD, _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_freeze_count() > 1000  # the start-up objects are out of the collector's way
        assert gc.get_threshold() == (max(before[0], GC_GEN0_THRESHOLD), before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def _chat_ok(url: str, model: str, headers: dict[str, str], n: int) -> None:
    """`n` chat completions for `model`, each answered 200 with a chat.completion body."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.post(url + "/v1/chat/completions", json=body,
                                    headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["object"] == "chat.completion"
