"""The lean HTTP/1.1 protocol of the hot endpoints (gateway/http/fastserver.py), over raw sockets:
what it answers itself, what it hands to aiohttp (and that the connection stays coherent), request
bodies that arrive in pieces or are never read, pipelining, keep-alive and shutdown."""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from gateway.http import fastrunner, fastserver
from gateway.http.fastrunner import FastServer
from gateway.http.fastserver import FastProtocol
from gateway.http.hotrequest import parse_head
from tests.core.support import KEY_ALL
from tests.fakes import Reply

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def chat_request(text: str, *, key: str = KEY_ALL, extra: str = "", body: bytes | None = None,
                 path: str = "/v1/chat/completions") -> bytes:
    data = body if body is not None else json.dumps(
        {"model": "mock/echo", "messages": [{"role": "user", "content": text}]}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
            ).encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return status, headers, body


def echoed(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


@pytest.fixture
async def conn(gw: Any) -> Any:
    writers = []

    async def open_() -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writers.append(writer)
        return reader, writer

    yield open_
    for w in writers:
        w.close()


def fast_server(gw: Any) -> FastServer:
    server = gw.server.runner.server
    assert isinstance(server, FastServer)
    return server


async def test_hot_path_is_answered_by_the_lean_protocol(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("hello", extra="x-request-id: mine-1\r\n"))
    status, headers, body = await read_response(reader)
    assert status == 200
    assert echoed(body) == "hello"
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "mine-1"
    assert headers["date"].endswith(" GMT")
    assert "server" not in headers  # aiohttp would add its Server header
    assert "connection" not in headers  # HTTP/1.1 keep-alive by default
    [served] = fast_server(gw).conns
    assert type(served) is FastProtocol
    sock = served.transport.get_extra_info("socket")  # type: ignore[union-attr]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


async def test_other_requests_hand_the_connection_to_aiohttp(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("one"))
    assert echoed((await read_response(reader))[2]) == "one"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert "aiohttp" in headers["server"]
    assert fast_server(gw).conns == set()  # aiohttp has it now
    writer.write(chat_request("two"))  # and serves the hot path too from then on
    status, headers, body = await read_response(reader)
    assert status == 200 and echoed(body) == "two" and "aiohttp" in headers["server"]


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n\r\n", 405),
    (b"POST /v1/nothing HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", 404),
    # request smuggling shapes: aiohttp's strict parser refuses them
    ((b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length : 2\r\n\r\n{}", 400),
    ((b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
      b"Content-Length: 3\r\n\r\n{}x"), 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-A: 1\nContent-Length: 2\r\n\r\n{}",
     400),
])
async def test_odd_requests_get_aiohttps_answer(gw: Any, conn: Any, fake: Any,
                                                request_bytes: bytes, status: int) -> None:
    reader, writer = await conn()
    writer.write(request_bytes)
    got, headers, body = await read_response(reader)
    assert got == status
    assert "aiohttp" in headers["server"]
    if status != 400:  # aiohttp's parser errors are not JSON
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


def test_parse_head_takes_only_plain_requests() -> None:
    base = (b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nauthorization: Bearer k\r\n"
            b"Content-Length:  12 \r\nConnection: keep-alive")
    parsed = parse_head(base)
    assert parsed is not None
    req, keep = parsed
    assert (req.kind, req.length, keep) == ("chat", 12, True)
    assert req.headers["Authorization"] == "Bearer k"  # case-insensitive, trimmed
    req, keep = parse_head(base.replace(b"keep-alive", b"close"))  # type: ignore[misc]
    assert keep is False
    assert parse_head(b"POST /v1/embeddings HTTP/1.1\r\nHost: gw")[0].kind == "embeddings"  # type: ignore[index]
    for bad in (base.replace(b"HTTP/1.1", b"HTTP/1.0"),
                base.replace(b"POST", b"PUT"),
                base.replace(b"/v1/chat/completions", b"/v1/chat/completions/"),
                base + b"\r\nContent-Encoding: gzip",
                base + b"\r\nExpect: 100-continue",
                base + b"\r\nUpgrade: h2c",
                base + b"\r\nTransfer-Encoding: chunked",
                base.replace(b"  12 ", b"1 2"),
                base + b"\r\n folded",
                base + b"\r\nX-Bad: a\x00b",
                base + b"\r\nX Bad: 1"):
        assert parse_head(bad) is None, bad


async def test_a_body_in_pieces_and_a_head_byte_by_byte(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    data = chat_request("pieces")
    split = data.index(b"\r\n\r\n") + 4
    for i in range(split):
        writer.write(data[i:i + 1])
        await writer.drain()
    body = data[split:]
    for piece in (body[:5], body[5:20], body[20:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)
    assert echoed((await read_response(reader))[2]) == "pieces"


async def test_pipelined_requests_are_answered_in_order(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("first") + chat_request("second", path="/chat/completions")
                 + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert echoed((await read_response(reader))[2]) == "first"
    assert echoed((await read_response(reader))[2]) == "second"
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b'{"status":"ok"}')


async def test_an_unread_body_is_skipped_and_the_connection_goes_on(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    data = chat_request("secret", key="sk-wrong")
    split = data.index(b"\r\n\r\n") + 10
    writer.write(data[:split])  # the head and a part of the body: the key is refused at once
    status, _, body = await read_response(reader)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    writer.write(data[split:] + chat_request("after"))
    status, _, body = await read_response(reader)
    assert status == 200 and echoed(body) == "after"


async def test_a_body_over_the_limit_is_413_without_being_kept(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    big = b"x" * (1024 * 1024 + 1)  # max_body_mb is 1
    writer.write(chat_request("", body=big))
    status, headers, body = await read_response(reader)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert headers["x-request-id"]
    writer.write(chat_request("next"))
    status, _, body = await read_response(reader)
    assert status == 200 and echoed(body) == "next"


async def test_errors_are_openai_json_with_the_request_id(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("", body=b"{not json", extra="x-request-id: bad-1\r\n"))
    status, headers, body = await read_response(reader)
    assert status == 400 and headers["x-request-id"] == "bad-1"
    err = json.loads(body)["error"]
    assert err["code"] == "invalid_json" and set(err) == {"message", "type", "param", "code"}
    writer.write(chat_request("x", extra="Content-Type: text/plain\r\n").replace(
        b"Content-Type: application/json\r\n", b"", 1))
    status, _, body = await read_response(reader)
    assert status == 400
    assert "got 'text/plain'" in json.loads(body)["error"]["message"]


async def test_connection_close_is_honoured(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("bye", extra="Connection: close\r\n"))
    status, headers, body = await read_response(reader)
    assert status == 200 and headers["connection"] == "close" and echoed(body) == "bye"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server closes


async def test_streams_are_chunked_sse(gw: Any, conn: Any, fake: Any) -> None:
    reader, writer = await conn()
    body = json.dumps({"model": "openai/gpt-4o", "stream": True,
                       "messages": [{"role": "user", "content": "a b c"}]}).encode()
    writer.write(chat_request("", body=body))
    status, headers, data = await read_response(reader)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert headers["x-modelyard-provider"] == "fakeai"
    events = [e for e in data.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                   for e in events[:-1] if json.loads(e[6:])["choices"])
    assert text == "echo: a b c"
    writer.write(chat_request("again"))  # keep-alive after a stream
    assert echoed((await read_response(reader))[2]) == "again"


async def test_idle_keep_alive_connections_are_swept(gw: Any, conn: Any,
                                                     monkeypatch: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("one"))
    await read_response(reader)
    server = fast_server(gw)
    [idle] = server.conns
    server._sweep()
    assert idle in server.conns  # not idle for 75 s yet
    monkeypatch.setattr(fastrunner, "KEEPALIVE_S", -1.0)
    server._sweep()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert idle not in server.conns


async def test_shutdown_closes_idle_connections_and_answers_busy_ones(gw: Any, conn: Any,
                                                                      fake: Any) -> None:
    idle_reader, idle_writer = await conn()
    idle_writer.write(chat_request("one"))
    await read_response(idle_reader)
    gate = asyncio.Event()
    fake.push(Reply(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                 "content": "late"},
                                       "finish_reason": "stop"}]}, gate=gate))
    reader, writer = await conn()
    body = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    writer.write(chat_request("", body=body.encode()))
    await fake.wait_requests(1)
    fast_server(gw).pre_shutdown()
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle: closed at once
    gate.set()
    status, headers, data = await read_response(reader)  # busy: answered, then closed
    assert status == 200 and echoed(data) == "late" and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def test_a_stream_waits_while_the_client_reads_slowly(gw: Any) -> None:
    proto = FastProtocol(fast_server(gw))
    transport = _Transport()
    proto.connection_made(transport)

    async def frames() -> Any:
        yield b"data: 1\n\n"
        proto.pause_writing()  # the socket buffer is full
        yield b"data: 2\n\n"
        yield b"data: 3\n\n"

    from gateway.pipeline import StreamReply

    task = asyncio.ensure_future(proto._stream(StreamReply({"content-type": "text/event-stream"},
                                                           frames()), "rid"))
    while proto.drain_waiter is None:
        await asyncio.sleep(0)
    written = b"".join(transport.out)
    assert b"data: 2" in written and b"data: 3" not in written  # held back until the drain
    assert not task.done()
    proto.resume_writing()
    await asyncio.wait_for(task, 5)
    assert b"".join(transport.out).endswith(b"9\r\ndata: 3\n\n\r\n0\r\n\r\n")
    proto.connection_lost(None)


async def test_expect_100_continue_goes_through_aiohttp(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    data = chat_request("continued", extra="Expect: 100-continue\r\n")
    split = data.index(b"\r\n\r\n") + 4
    writer.write(data[:split])
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(data[split:])
    status, headers, body = await read_response(reader)
    assert status == 200 and echoed(body) == "continued" and "aiohttp" in headers["server"]


class _PausableTransport(_Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_pipelined_requests_wait_while_the_client_does_not_read(gw: Any,
                                                                     monkeypatch: Any) -> None:
    monkeypatch.setattr(fastserver, "MAX_BUFFERED", 100)
    proto = FastProtocol(fast_server(gw))
    transport = _PausableTransport()
    proto.connection_made(transport)

    async def until(cond: Any) -> None:
        async with asyncio.timeout(5):
            while not cond():
                await asyncio.sleep(0)

    proto.data_received(chat_request("first"))
    await until(lambda: b"echo" in b"".join(transport.out) and proto.req is None)
    proto.pause_writing()  # the socket buffer is full: the client is not reading
    proto.data_received(chat_request("second") + chat_request("third"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert proto.req is None and proto.task is None  # no new work while it does not read
    assert b"second" not in b"".join(transport.out)
    assert not transport.reading  # more than MAX_BUFFERED held: reading paused too
    proto.resume_writing()
    await until(lambda: b"third" in b"".join(transport.out) and proto.req is None)
    out = b"".join(transport.out)
    assert out.index(b"second") < out.index(b"third") and transport.reading
    proto.connection_lost(None)


class _ClosingTransport(_PausableTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


async def _until(cond: Any) -> None:
    async with asyncio.timeout(5):
        while not cond():
            await asyncio.sleep(0)


async def test_requests_held_behind_a_close_are_never_run(gw: Any) -> None:
    proto = FastProtocol(fast_server(gw))
    transport = _ClosingTransport()
    proto.connection_made(transport)
    proto.data_received(chat_request("first", extra="Connection: close\r\n")
                        + chat_request("second"))
    assert proto.task is not None  # the first is under way, the second held behind it
    proto.pause_writing()  # and the client stops reading
    await _until(lambda: transport.closing)
    assert b"first" in b"".join(transport.out)
    proto.resume_writing()  # the answer drains before the close completes
    for _ in range(20):
        await asyncio.sleep(0)
    assert proto.task is None and proto.req is None and not proto.buf
    assert b"second" not in b"".join(transport.out)
    proto.connection_lost(None)


async def test_an_error_after_a_streams_head_closes_instead_of_a_second_answer(
        gw: Any, monkeypatch: Any) -> None:
    from gateway.pipeline import StreamReply

    async def frames() -> Any:
        yield b"data: 1\n\n"
        raise RuntimeError("a bug after the head")

    async def chat(*_: Any) -> StreamReply:
        return StreamReply({"content-type": "text/event-stream"}, frames())

    server = fast_server(gw)
    monkeypatch.setattr(server.state.services.pipeline, "chat", chat)
    proto = FastProtocol(server)
    transport = _ClosingTransport()
    proto.connection_made(transport)
    proto.data_received(chat_request("x"))
    await _until(lambda: transport.closing)
    out = b"".join(transport.out)
    assert out.count(b"HTTP/1.1 ") == 1 and b"data: 1" in out and b"0\r\n\r\n" not in out
    proto.connection_lost(None)


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/chat/completions HTTP/1.1\nHost: gw\nContent-Length: 2\n\n{}",  # bare LF
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Long: " + b"a" * 9000
     + b"\r\nContent-Length: 2\r\n\r\n{}"),
])
async def test_heads_past_aiohttps_limits_get_its_400_at_once(gw: Any, conn: Any,
                                                             request_bytes: bytes) -> None:
    reader, writer = await conn()
    writer.write(request_bytes)
    status, headers, _ = await read_response(reader)
    assert status == 400 and "aiohttp" in headers["server"]


async def test_an_absurd_content_length_goes_to_aiohttp(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("x").replace(b"Content-Length: ",
                                           b"Content-Length: " + b"0" * 5000, 1))
    status, headers, body = await read_response(reader)
    assert "aiohttp" in headers["server"]
    assert status == 400 and "Content-Length" in json.loads(body)["error"]["message"]
    assert fast_server(gw).conns == set()


async def test_odd_bytes_in_content_type_or_key_are_clear_errors(gw: Any, conn: Any) -> None:
    reader, writer = await conn()
    writer.write(chat_request("x").replace(b"Content-Type: application/json",
                                           b"Content-Type: application/json\x80"))
    status, _, body = await read_response(reader)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "unsupported_content_type"
    writer.write(chat_request("x").replace(b"Bearer ", b"Bearer sk-\x80"))
    status, _, body = await read_response(reader)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
