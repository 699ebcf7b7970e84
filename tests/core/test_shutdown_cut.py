"""The drain's cut (`AppState.drain` once `shutdown_grace_s` ran out), in process: what each kind
of request cut by the shutdown records, and what its metrics and client see. The real SIGTERM
path, both servers, is in tests/lifecycle/test_shutdown_cut.py."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from gateway.accounting.jsonl import read_jsonl
from gateway.accounting.record import UsageRecord
from gateway.app import create_app
from gateway.http.keys import RESOURCES, STATE
from gateway.streaming import cut_by_shutdown
from tests.core.support import KEY_ALL, auth, base_config, build, with_changes
from tests.fakes import FakeOpenAI, Reply, Stream, chunk

MODEL = "openai/gpt-4o"


async def gateway(aiohttp_client: Any, fake: FakeOpenAI, jsonl: Path) -> Any:
    app = create_app(build(with_changes(base_config(fake.base_url),
                                        usage={"jsonl_path": str(jsonl)})))
    app.middlewares.insert(0, app[STATE].track_requests())  # as `serve` does
    return await aiohttp_client(app)


async def records(gw: Any, jsonl: Path) -> dict[str, UsageRecord]:
    res = gw.server.app[RESOURCES]
    await res.recorder.drain()
    await res.sink.flush(timeout_s=5)
    return {r.extra.get("client_request_id", r.request_id): r for r in read_jsonl(jsonl)}


def requests_total(status: str, provider: str = "fakeai") -> float:
    return REGISTRY.get_sample_value("modelyard_requests_total",
                                     {"model": MODEL, "provider": provider, "status": status}) or 0


async def test_a_request_waiting_for_upstream_gets_a_503_and_records_the_shutdown(
        aiohttp_client: Any, fake: FakeOpenAI, tmp_path: Path) -> None:
    jsonl = tmp_path / "usage.jsonl"
    gw = await gateway(aiohttp_client, fake, jsonl)
    before = requests_total("503"), requests_total("499")
    fake.push(Reply(hang=True))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    pending = asyncio.ensure_future(gw.post("/v1/chat/completions", json=body, headers={
        **auth(KEY_ALL), "x-request-id": "plain-1"}))
    await fake.wait_requests(1)
    state = gw.server.app[STATE]
    assert await state.drain(0.05) == 1
    r = await asyncio.wait_for(pending, 5)
    assert r.status == 503
    error = (await r.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "gateway_shutdown")
    assert "shutdown_grace_s" in error["message"]
    assert state.inflight == 0
    rec = (await records(gw, jsonl))["plain-1"]
    assert (rec.status, rec.cut, rec.error_type) == (503, "shutdown", "gateway_shutdown")
    # the metrics count what the client was sent, as the record does, with the provider waited on
    assert (requests_total("503"), requests_total("499")) == (before[0] + 1, before[1])
    await asyncio.wait_for(fake.requests[0].finished.wait(), 5)
    assert fake.requests[0].client_gone  # the upstream call was cancelled


async def test_a_stream_cut_while_its_client_does_not_read_records_the_shutdown(
        aiohttp_client: Any, fake: FakeOpenAI, tmp_path: Path) -> None:
    """The cancellation lands where the server waits for the client to read (not in the relay):
    the relay is closed instead of cancelled, and still knows it was the shutdown."""
    jsonl = tmp_path / "usage.jsonl"
    gw = await gateway(aiohttp_client, fake, jsonl)
    big = "x" * 60_000
    fake.push(Stream([chunk({"role": "assistant", "content": ""})]
                     + [chunk({"content": big}) for _ in range(400)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    data = json.dumps({"model": MODEL, "stream": True,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    writer.transport.set_write_buffer_limits(0)
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                  f"Authorization: Bearer {KEY_ALL}\r\nContent-Type: application/json\r\n"
                  f"x-request-id: slow-reader-1\r\nContent-Length: {len(data)}\r\n\r\n"
                  ).encode() + data)
    state = gw.server.app[STATE]
    await fake.wait_requests(1)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    reader._transport.pause_reading()  # type: ignore[attr-defined]  # the client stops reading
    [conn] = gw.server.runner.server.conns
    for _ in range(500):  # until the gateway waits for the client to read
        if conn.writing_paused and conn.drain_waiter is not None:
            break
        await asyncio.sleep(0.01)
    assert conn.drain_waiter is not None and state.inflight == 1
    assert await state.drain(0.05) == 1
    assert state.inflight == 0
    writer.close()
    rec = (await records(gw, jsonl))["slow-reader-1"]
    assert (rec.status, rec.cut, rec.error_type) == (200, "shutdown", "gateway_shutdown")
    assert rec.stream and rec.provider == "fakeai"


async def test_cut_by_shutdown_is_only_the_drains_cut() -> None:
    async def probe() -> bool:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return cut_by_shutdown()
        return False

    task = asyncio.ensure_future(probe())
    await asyncio.sleep(0)
    task.cancel()  # a client that left: not the shutdown
    assert await task is False
    assert not cut_by_shutdown()
