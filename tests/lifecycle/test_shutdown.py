"""SIGTERM on a real gateway process: readiness, listener, drain, usage flush, exit code."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from tests.lifecycle.support import (
    Gateway, StreamReader, free_port, mock_config, refuses_connections, until, words,
)


async def test_sigterm_drains_an_inflight_stream_and_exits_0(
        spawn: Callable[..., Gateway], tmp_path: Path) -> None:
    port, mport, jsonl = free_port(), free_port(), tmp_path / "usage.jsonl"
    gw = spawn(mock_config(port, chunk_delay_ms=120, grace_s=15, metrics_port=mport, jsonl=jsonl),
               port)
    await gw.wait_ready()
    probes = f"http://127.0.0.1:{mport}"
    async with aiohttp.ClientSession() as session:
        stream = StreamReader(session, gw.url, "mock/echo", words(16), request_id="drain-me-1")
        await asyncio.wait_for(stream.first.wait(), 5)
        assert stream.error is None and not stream.done
        gw.signal(signal.SIGTERM)

        async with session.get(probes + "/readyz") as r:  # at once: the stream is still going
            assert r.status == 503, await r.text()
            assert (await r.json())["error"]["code"] == "not_ready"
        assert not stream.task.done(), "readiness must turn false before in-flight work ends"
        async with session.get(probes + "/healthz") as r:
            assert r.status == 200
        await until(lambda: _async(refuses_connections(port)), 3, "listener closed")
        assert not stream.task.done(), "the listener must close while the stream still runs"

        await asyncio.wait_for(stream.task, 15)
        assert stream.error is None, stream.error
        assert stream.done, stream.frames[-3:]
        assert "".join(stream.contents()).split() == words(16).split()
        async with session.get(probes + "/healthz") as r:  # alive until the process exits
            assert r.status == 200

    assert await gw.wait_exit(10) == 0, gw.log_text()
    assert refuses_connections(mport)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    mine = [r for r in records if r["extra"].get("client_request_id") == "drain-me-1"]
    assert len(mine) == 1 and mine[0]["status"] == 200 and mine[0]["completion_tokens"] == 16
    msgs = [r["msg"] for r in gw.log_records()]
    assert msgs.index("SIGTERM received: shutting down") < msgs.index("stopped")


async def test_grace_period_over_cuts_streams_and_still_exits_0(
        spawn: Callable[..., Gateway], tmp_path: Path) -> None:
    port, jsonl = free_port(), tmp_path / "usage.jsonl"
    gw = spawn(mock_config(port, chunk_delay_ms=400, grace_s=1, jsonl=jsonl), port)
    await gw.wait_ready()
    async with aiohttp.ClientSession() as session:
        stream = StreamReader(session, gw.url, "mock/echo", words(60), request_id="cut-me-1")
        await asyncio.wait_for(stream.first.wait(), 5)
        t0 = time.perf_counter()
        gw.signal(signal.SIGTERM)
        await asyncio.wait_for(stream.task, 10)
        assert not stream.done, "a 24 s stream cannot finish within a 1 s grace period"
        assert 0.9 < stream.ended_at - t0 < 2.5, "cut at shutdown_grace_s (1 s), not twice it"
        assert await gw.wait_exit(10) == 0, gw.log_text()
        assert time.perf_counter() - t0 < 4, "exits promptly after the grace period"
    assert any(r["msg"].startswith("shutdown grace period over: cutting 1 ")
               for r in gw.log_records())
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["extra"].get("client_request_id") for r in records] == ["cut-me-1"], \
        "the cut stream is still recorded"


async def test_idle_keepalive_connections_do_not_hold_shutdown(
        spawn: Callable[..., Gateway]) -> None:
    port = free_port()
    gw = spawn(mock_config(port, grace_s=30), port)
    await gw.wait_ready()
    conn = aiohttp.TCPConnector(limit=4, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(3):  # an idle keep-alive connection stays pooled on our side
            async with session.get(gw.url + "/healthz") as r:
                assert r.status == 200
                await r.read()
        t0 = time.perf_counter()
        gw.signal(signal.SIGTERM)
        assert await gw.wait_exit(10) == 0, gw.log_text()
        assert time.perf_counter() - t0 < 3, "an idle connection must not wait out the 30 s grace"


async def test_second_sigterm_while_draining_is_ignored(spawn: Callable[..., Gateway]) -> None:
    port = free_port()
    gw = spawn(mock_config(port, chunk_delay_ms=100, grace_s=15), port)
    await gw.wait_ready()
    async with aiohttp.ClientSession() as session:
        stream = StreamReader(session, gw.url, "mock/echo", words(12))
        await asyncio.wait_for(stream.first.wait(), 5)
        gw.signal(signal.SIGTERM)
        await gw.wait_log(lambda r: r["msg"].startswith("shutting down"), 5)
        gw.signal(signal.SIGINT)
        await gw.wait_log(lambda r: "while shutting down" in r["msg"], 5)
        await asyncio.wait_for(stream.task, 10)
        assert stream.done and stream.error is None
    assert await gw.wait_exit(10) == 0


async def _async(value: Any) -> Any:
    return value
