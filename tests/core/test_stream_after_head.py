"""aiohttp's path (requests the lean server hands over: a chunked body, HTTP/1.0): an error after
a stream's head never becomes a second HTTP answer inside the first one's body. The stream ends
with the error event (the convention after the commit point), or just ends when its `[DONE]`
already went out, or the connection closes when not even that can be written."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from gateway.accounting.jsonl import read_jsonl
from gateway.errors import UpstreamProtocolError
from gateway.http.keys import RESOURCES, STATE
from gateway.http.middleware import HEAD_SENT, request_id_and_errors
from gateway.pipeline import StreamReply
from tests.core.conftest import MakeGateway
from tests.core.support import KEY_ALL, base_config, with_changes
from tests.e2e.support import eventually
from tests.fakes import FakeOpenAI, Stream, text_stream

DONE = b"data: [DONE]\n\n"


def chunked_request(stream: bool = True, text: str = "a b c", version: str = "1.1") -> bytes:
    """A chat request the lean server hands to aiohttp: a chunked body (or HTTP/1.0)."""
    data = json.dumps({"model": "openai/gpt-4o", "stream": stream,
                       "messages": [{"role": "user", "content": text}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/{version}\r\nHost: gw\r\n"
            f"Authorization: Bearer {KEY_ALL}\r\nContent-Type: application/json\r\n")
    if version == "1.0":
        return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + \
        b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """One answer: (status, headers, body, whether it ended properly). A chunked body ends with
    its terminator; a body without framing (HTTP/1.0) with the connection. A connection closed
    inside a chunked body is (..., False)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    status = int(lines[0].split()[1])
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"])), True
    if headers.get("transfer-encoding") != "chunked":
        return status, headers, await asyncio.wait_for(reader.read(), 5), True
    body = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            return status, headers, body, False  # closed inside the body
        size = int(line.strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body, True
        body += chunk[:-2]


@pytest.fixture
async def conn(gw: Any) -> AsyncIterator[Any]:
    writers = []

    async def open_(port: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port or gw.server.port)
        writers.append(writer)
        return reader, writer

    yield open_
    for w in writers:
        w.close()


def fail_after(monkeypatch: Any, gw: Any, *frames: bytes) -> None:
    """The pipeline's stream yields `frames`, then raises (a bug after the head)."""

    async def gen() -> AsyncIterator[bytes]:
        for f in frames:
            yield f
        raise RuntimeError("a bug after the head")

    async def chat(*_: Any) -> StreamReply:
        return StreamReply({"content-type": "text/event-stream"}, gen())

    monkeypatch.setattr(gw.server.app[STATE].services.pipeline, "chat", chat)


async def test_an_error_mid_stream_ends_it_with_the_error_event(gw: Any, conn: Any,
                                                               monkeypatch: Any) -> None:
    fail_after(monkeypatch, gw, b"data: 1\n\n")
    reader, writer = await conn()
    writer.write(chunked_request())
    status, headers, body, ended = await read_answer(reader)
    assert status == 200 and "aiohttp" in headers["server"] and ended
    first, last = [e for e in body.split(b"\n\n") if e]
    assert first == b"data: 1"
    error = json.loads(last[6:])["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert b"HTTP/1.1" not in body
    # the stream ended cleanly: the connection goes on
    monkeypatch.undo()
    writer.write(chunked_request(stream=False, text="again"))
    status, _, body, _ = await read_answer(reader)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "echo: again"


async def test_an_error_after_done_just_ends_the_stream(gw: Any, conn: Any,
                                                        monkeypatch: Any) -> None:
    fail_after(monkeypatch, gw, b"data: 1\n\n", DONE)
    reader, writer = await conn()
    writer.write(chunked_request())
    status, _, body, ended = await read_answer(reader)
    assert status == 200 and ended
    assert body == b"data: 1\n\n" + DONE  # no error event after [DONE]


def break_gateway_writes(monkeypatch: Any, *, after: int, error: Exception) -> None:
    """The gateway's answer (not the fake upstream's: it has no x-request-id) writes `after`
    times, then every write raises `error`."""
    writes = 0
    real_write = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes) -> None:
        nonlocal writes
        if "x-request-id" in self.headers:
            writes += 1
            if writes > after:
                raise error
        await real_write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)


async def test_a_stream_that_cannot_be_ended_closes_the_connection(
        fake: FakeOpenAI, make_gateway: MakeGateway, conn: Any, monkeypatch: Any,
        tmp_path: Path) -> None:
    jsonl = tmp_path / "usage.jsonl"
    gw = await make_gateway(with_changes(base_config(fake.base_url),
                                         usage={"jsonl_path": str(jsonl)}))
    hold = asyncio.Event()
    fake.push(Stream(text_stream(["a", "b"]), pause={2: hold}))
    break_gateway_writes(monkeypatch, after=1, error=RuntimeError("the writer broke"))
    reader, writer = await conn(gw.server.port)
    writer.write(chunked_request())
    hold.set()
    status, _, body, ended = await read_answer(reader)
    assert status == 200 and not ended  # closed inside the body: the client sees it was cut
    assert body.startswith(b"data: {") and b"HTTP/1.1" not in body
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await asyncio.wait_for(fake.requests[-1].finished.wait(), 5)
    res = gw.server.app[RESOURCES]
    await res.recorder.drain()
    await res.sink.flush(timeout_s=5)
    [rec] = list(read_jsonl(jsonl))
    # the gateway cut it, not the client
    assert (rec.status, rec.cut, rec.error_type) == (200, "upstream_cut", "internal_error")


async def test_http_1_0_streams_end_with_the_connection(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chunked_request(version="1.0"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    body = await asyncio.wait_for(reader.read(), 5)
    assert body.endswith(DONE) and body.startswith(b"data: {")


async def test_the_middleware_closes_instead_of_a_second_answer(aiohttp_client: Any) -> None:
    """A handler that does not end its own stream: the error middleware's safety net."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        request[HEAD_SENT] = True
        await resp.write(b"data: 1\n\n")
        raise UpstreamProtocolError("gone mid-stream")

    app = web.Application(middlewares=[request_id_and_errors])
    app.router.add_get("/s", handler)
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)  # until the connection closes
    finally:
        writer.close()
    assert raw.count(b"HTTP/1.1 ") == 1 and raw.startswith(b"HTTP/1.1 200")
    assert b"data: 1" in raw and b"upstream_error" not in raw and not raw.endswith(b"0\r\n\r\n")


async def test_a_client_leaving_mid_write_is_recorded_with_its_cut(
        fake: FakeOpenAI, make_gateway: MakeGateway, caplog: Any, monkeypatch: Any) -> None:
    """The write finds the client gone (not the relay): closing the frames closes the relay in
    the same task, so the access line and metrics, written once with the record, carry the cut
    and the usage."""
    caplog.set_level(logging.INFO, logger="modelyard.access")
    gw = await make_gateway(base_config(fake.base_url))
    fake.push(Stream(text_stream([f"w{i} " for i in range(40)]), split=200))
    break_gateway_writes(monkeypatch, after=2, error=ConnectionResetError("the client left"))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    writer.write(chunked_request().replace(b"Host: gw", b"Host: gw\r\nx-request-id: leaver-aio"))
    await fake.wait_requests(1)
    await asyncio.wait_for(fake.requests[-1].finished.wait(), 5)

    async def logged() -> bool:
        return any(r.name == "modelyard.access" for r in caplog.records)

    await eventually(logged, 5.0, "the access line of the request whose client left")
    writer.close()
    [line] = [r for r in caplog.records
              if r.name == "modelyard.access" and r.access["request_id"] == "leaver-aio"]
    assert (line.access["status"], line.access["cut"]) == (200, "client_disconnected")
    assert line.access["completion_tokens"] > 0  # estimated from what was relayed
