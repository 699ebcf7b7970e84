"""SIGTERM with requests that outlive `shutdown_grace_s`: they are cut by the shutdown, and say so.

A real gateway process over a fake upstream that never finishes: a stream and a plain request on
the lean server, the same two on aiohttp's path (a chunked request body is handed to aiohttp).
When the grace period runs out, each client is told (a 503 `gateway_shutdown`, or a stream's
final error event), and each usage record and access line says `cut="shutdown"`, not a client
that left.
"""
from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any, Callable

import aiohttp

from tests.fakes import FakeOpenAI, Recorded, Reply, Stream, text_stream
from tests.lifecycle.support import AUTH, KEY, Gateway, StreamReader, free_port, mock_config

Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def config(port: int, base_url: str, jsonl: Path) -> dict[str, Any]:
    cfg = mock_config(port, grace_s=1, jsonl=jsonl)
    cfg["providers"]["up"] = {"adapter": "openai", "base_url": base_url, "api_key": "sk-up"}
    cfg["routes"]["slow"] = {"targets": [{"provider": "up", "model": "m-up"}]}
    cfg["retries"] = {"attempts": 1}
    return cfg


def never_finishes(rec: Recorded) -> Stream | Reply:
    """A stream that stops after its first events, a completion that never comes."""
    if (rec.json or {}).get("stream"):
        return Stream(text_stream(["one ", "two "]), hang_after=3)
    return Reply(hang=True)


def body(stream: bool) -> bytes:
    return json.dumps({"model": "slow", "stream": stream,
                       "messages": [{"role": "user", "content": "take your time"}]}).encode()


async def send_chunked(port: int, rid: str, stream: bool) -> Raw:
    """A request with a chunked body: the lean server hands it to aiohttp's protocol."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = body(stream)
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}"
                  f"\r\nContent-Type: application/json\r\nx-request-id: {rid}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n").encode()
                 + b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))
    await writer.drain()
    return reader, writer


async def read_answer(conn: Raw) -> tuple[bytes, int, dict[str, str], bytes, bool]:
    """Everything until the connection closes: (raw bytes, status, headers, body, whether a
    chunked body ended with its terminator)."""
    reader, writer = conn
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") != "chunked":
        return raw, int(lines[0].split()[1]), headers, rest, False
    out, terminated = b"", False
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            terminated = rest == b"\r\n"
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return raw, int(lines[0].split()[1]), headers, out, terminated


def last_event(data: bytes) -> dict[str, Any]:
    events = [e for e in data.split(b"\n\n") if e.strip()]
    assert events and events[-1].startswith(b"data: {"), events[-3:]
    assert b"data: [DONE]" not in events
    return dict(json.loads(events[-1][6:]))


async def test_requests_cut_at_the_end_of_the_grace_period_are_recorded_as_shutdown(
        spawn: Callable[..., Gateway], tmp_path: Path) -> None:
    jsonl = tmp_path / "usage.jsonl"
    async with FakeOpenAI(default=never_finishes) as fake, aiohttp.ClientSession() as session:
        port = free_port()
        gw = spawn(config(port, fake.base_url, jsonl), port)
        await gw.wait_ready()
        # on the lean server
        stream = StreamReader(session, gw.url, "slow", "take your time",
                              request_id="cut-stream-lean")
        plain = asyncio.ensure_future(session.post(
            gw.url + "/v1/chat/completions", data=body(False),
            headers={**AUTH, "x-request-id": "cut-plain-lean",
                     "Content-Type": "application/json"}))
        # on aiohttp's path
        aio_stream = await send_chunked(port, "cut-stream-aio", True)
        aio_plain = await send_chunked(port, "cut-plain-aio", False)
        await fake.wait_requests(4)
        await asyncio.wait_for(stream.first.wait(), 5)
        assert stream.error is None and not stream.done

        gw.signal(signal.SIGTERM)

        # the clients are told why, instead of a connection closed without an answer
        r = await asyncio.wait_for(plain, 10)
        assert r.status == 503, await r.text()
        assert (await r.json())["error"]["code"] == "gateway_shutdown"
        assert r.headers["x-request-id"] == "cut-plain-lean"
        assert r.headers["connection"].lower() == "close"
        await asyncio.wait_for(stream.task, 10)
        assert stream.error is None, stream.error  # a stream that ends properly...
        assert not stream.done  # ...without [DONE]...
        *relayed, last = stream.frames
        assert json.loads(last[6:])["error"]["code"] == "gateway_shutdown"
        text = "".join(c["delta"].get("content") or "" for f in relayed
                       for c in json.loads(f[6:])["choices"])
        assert text.split() == ["one", "two"]

        raw, status, headers, data, terminated = await read_answer(aio_plain)
        assert status == 503 and raw.count(b"HTTP/1.1 ") == 1, raw
        assert json.loads(data)["error"]["code"] == "gateway_shutdown"
        assert headers["x-request-id"] == "cut-plain-aio"
        raw, status, headers, data, terminated = await read_answer(aio_stream)
        assert status == 200 and raw.count(b"HTTP/1.1 ") == 1 and terminated, raw
        assert last_event(data)["error"]["code"] == "gateway_shutdown"
        assert headers["x-request-id"] == "cut-stream-aio"

        assert await gw.wait_exit(10) == 0, gw.log_text()
        for rec in fake.requests:  # the upstream calls were cancelled too
            await asyncio.wait_for(rec.finished.wait(), 5)
            assert rec.client_gone

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_rid = {r["extra"]["client_request_id"]: r for r in records}
    assert len(records) == len(by_rid) == 4, records  # exactly one record each
    want = {"cut-stream-lean": 200, "cut-stream-aio": 200,  # the status their head carried
            "cut-plain-lean": 503, "cut-plain-aio": 503}  # the answer they were sent
    for rid, status in want.items():
        rec = by_rid[rid]
        assert (rec["cut"], rec["status"], rec["error_type"]) == \
            ("shutdown", status, "gateway_shutdown"), rec
        assert rec["stream"] == (status == 200)
        if rec["stream"]:
            assert rec["provider"] == "up" and rec["completion_tokens"] > 0  # estimated

    access = {r["request_id"]: r for r in gw.log_records() if r.get("logger") == "modelyard.access"}
    for rid, status in want.items():
        assert (access[rid]["status"], access[rid]["cut"], access[rid]["error"]) == \
            (status, "shutdown", "gateway_shutdown"), access[rid]
    assert any(r["msg"].startswith("shutdown grace period over: cutting 4 ")
               for r in gw.log_records())
