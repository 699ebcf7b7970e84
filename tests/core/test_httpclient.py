"""The upstream HTTP/1.1 client against scripted raw servers: framing, keep-alive, timers, errors.

Each test's server is a small asyncio protocol that answers exactly the bytes the test names, so
that framing (Content-Length, chunked, until-close, gzip), the keep-alive race and every failure
are exercised as they look on the wire.
"""
from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from gateway.httpclient import HttpClient

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
KW = {"connect_s": 2.0, "first_byte_s": 2.0, "total_s": 5.0}


class Script(asyncio.Protocol):
    """Server side of one connection: `answer(conn_no, req_no, request_bytes)` returns the bytes
    to send (None: send nothing; b"": close at once)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.no = len(server.conns)
        self.reqs = 0
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.server.conns.append(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            request, self.buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
            self.server.requests.append(request)
            reply = self.server.answer(self.no, self.reqs, request)
            self.reqs += 1
            if reply == b"":
                self.transport.close()  # type: ignore[attr-defined]
                return
            if reply is not None:
                for part in reply if isinstance(reply, list) else [reply]:
                    self.transport.write(part)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.closed.append(self.no)
        self.server.closed_event.set()


class Server:
    def __init__(self, answer: Callable[[int, int, bytes], object]) -> None:
        self.answer = answer
        self.conns: list[Script] = []
        self.requests: list[bytes] = []
        self.closed: list[int] = []
        self.closed_event = asyncio.Event()

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> str:
        loop = asyncio.get_running_loop()
        self.srv = await loop.create_server(lambda: Script(self), "127.0.0.1", 0, ssl=ssl_ctx)
        port = self.srv.sockets[0].getsockname()[1]
        return f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{port}"

    async def wait_closed(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.closed) < n:
                self.closed_event.clear()
                await self.closed_event.wait()

    def write(self, conn: int, data: bytes) -> None:
        self.conns[conn].transport.write(data)  # type: ignore[attr-defined]

    def close(self) -> None:
        for c in self.conns:
            c.transport.close()
        self.srv.close()


@pytest.fixture
async def serve():
    servers: list[Server] = []

    async def start(answer, ssl_ctx=None):  # type: ignore[no-untyped-def]
        s = Server(answer)
        servers.append(s)
        return s, await s.start(ssl_ctx)

    yield start
    for s in servers:
        s.close()


async def test_request_bytes_and_keep_alive_reuse(serve) -> None:
    srv, base = await serve(lambda c, r, req: OK)
    client = HttpClient("p")
    headers = {"content-type": "application/json", "Authorization": "Bearer sk-x",
               "Host": "evil", "content-length": "999"}
    for _ in range(3):
        resp = await client.request("POST", f"{base}/v1/chat?x=1", headers, b'{"a":1}', **KW)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers.get("CONTENT-LENGTH") == "11" and "content-type" in resp.headers
        assert await resp.read() == b'{"ok":true}'
    assert len(srv.conns) == 1  # one connection, reused
    port = base.rsplit(":", 1)[1]
    assert srv.requests[0] == (
        f"POST /v1/chat?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\nAuthorization: Bearer sk-x\r\n"
        "Content-Length: 7\r\n\r\n{\"a\":1}").encode()
    await client.close()
    await srv.wait_closed(1)  # close() drops the idle connection


async def test_chunked_stream_arrives_in_pieces_then_connection_is_reused(serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    srv, base = await serve(lambda c, r, req: head if r == 0 else OK)
    client = HttpClient("p")
    resp = await client.request("POST", f"{base}/s", {}, b"{}", **KW)
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    chunks = resp.chunks().__aiter__()
    got = []
    for event in (b"data: 1\n\n", b"data: 2\n\n"):
        srv.write(0, b"%x\r\n%s\r\n" % (len(event), event))
        got.append(await chunks.__anext__())
    srv.write(0, b"0\r\n\r\n")
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    resp.close()
    assert got == [b"data: 1\n\n", b"data: 2\n\n"]
    again = await client.request("POST", f"{base}/j", {}, b"{}", **KW)
    assert await again.read() == b'{"ok":true}'
    assert len(srv.conns) == 1
    await client.close()


async def test_body_until_close_and_gzip(serve) -> None:
    packed = gzip.compress(b'{"big":"' + b"x" * 5000 + b'"}')
    replies = [
        [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":", b"\"close\"}", b""],
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
            len(packed), packed),
    ]

    def answer(c: int, r: int, req: bytes) -> object:
        reply = replies[c]
        if isinstance(reply, list) and reply[-1] == b"":
            srv.conns[c].transport.write(b"".join(reply[:-1]))  # type: ignore[attr-defined]
            return b""
        return reply

    srv, base = await serve(answer)
    client = HttpClient("p")
    resp = await client.request("POST", f"{base}/a", {}, b"{}", **KW)
    assert await resp.read() == b'{"until":"close"}'
    resp = await client.request("POST", f"{base}/b", {}, b"{}", **KW)
    assert await resp.read() == b'{"big":"' + b"x" * 5000 + b'"}'
    assert len(srv.conns) == 2  # a body that ends with the connection cannot be reused
    await client.close()


async def test_stale_keep_alive_connection_is_retried_once_on_a_new_one(serve) -> None:
    # the server answers the first request of each connection, then closes the connection
    # when the next request arrives: the keep-alive race, seen from the client
    srv, base = await serve(lambda c, r, req: OK if r == 0 else b"")
    client = HttpClient("p")
    assert await (await client.request("POST", f"{base}/1", {}, b"{}", **KW)).read() == b'{"ok":true}'
    assert await (await client.request("POST", f"{base}/2", {}, b"{}", **KW)).read() == b'{"ok":true}'
    assert len(srv.conns) == 2 and len(srv.requests) == 3
    await client.close()


async def test_fresh_connection_closed_before_an_answer_is_a_reset(serve) -> None:
    srv, base = await serve(lambda c, r, req: b"")
    client = HttpClient("prov")
    with pytest.raises(UpstreamConnectError, match="provider 'prov' reset the connection"):
        await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    assert len(srv.requests) == 1  # not sent twice: a new connection is not the keep-alive race
    await client.close()


async def test_first_byte_timeout_drops_the_connection(serve) -> None:
    srv, base = await serve(lambda c, r, req: None)
    client = HttpClient("prov")
    with pytest.raises(UpstreamTimeout, match="provider 'prov' did not answer within 0.1s"):
        await client.request("POST", f"{base}/x", {}, b"{}", connect_s=1, first_byte_s=0.1,
                             total_s=5)
    await srv.wait_closed(1)
    await client.close()


async def test_body_deadline_and_stream_stall(serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":"
    srv, base = await serve(lambda c, r, req: head)
    client = HttpClient("prov")
    resp = await client.request("POST", f"{base}/x", {}, b"{}", connect_s=1, first_byte_s=1,
                                total_s=0.2)
    with pytest.raises(UpstreamTimeout, match="did not finish its answer within the request's"):
        await resp.read()
    resp = await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    chunks = resp.chunks().__aiter__()
    assert await chunks.__anext__() == b'{"partial":'
    resp.idle(0.1)
    with pytest.raises(UpstreamTimeout, match=r"stalled for more than 0.1s \(timeouts.idle_s\)"):
        await chunks.__anext__()
    resp.close()
    await srv.wait_closed(2)
    await client.close()


async def test_cut_body_and_malformed_answer(serve) -> None:
    replies = {0: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut\"",
               1: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n",
               2: b"SMTP ready\r\n\r\n"}

    def answer(c: int, r: int, req: bytes) -> object:
        if c < 2:
            srv.conns[c].transport.write(replies[c])  # type: ignore[attr-defined]
            return b""  # then close mid-body
        return replies[c]

    srv, base = await serve(answer)
    client = HttpClient("prov")
    resp = await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    with pytest.raises(UpstreamProtocolError, match="provider 'prov' cut the response short"):
        await resp.read()
    resp = await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    got: list[bytes] = []
    with pytest.raises(UpstreamProtocolError, match="provider 'prov' cut the stream"):
        async for data in resp.chunks():
            got.append(data)
    assert got == [b"data:"]
    with pytest.raises(UpstreamProtocolError, match="sent a malformed HTTP answer"):
        await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    await client.close()


async def test_interim_100_continue_is_skipped(serve) -> None:
    srv, base = await serve(lambda c, r, req: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    client = HttpClient("p")
    resp = await client.request("POST", f"{base}/x", {}, b"{}", **KW)
    assert resp.status == 200 and await resp.read() == b'{"ok":true}'
    await client.close()


async def test_connect_refused_and_bad_header_value() -> None:
    client = HttpClient("prov")
    with pytest.raises(UpstreamConnectError, match="cannot connect to provider 'prov'"):
        await client.request("POST", "http://127.0.0.1:1/x", {}, b"{}", **KW)
    with pytest.raises(UpstreamProtocolError, match="header 'x-key' has a line break") as info:
        await client.request("POST", "http://127.0.0.1:1/x", {"x-key": "a\r\nInjected: 1"},
                             b"{}", **KW)
    assert info.value.retryable is False and "Injected" not in info.value.message
    with pytest.raises(UpstreamConnectError, match="unusable URL scheme 'ftp'"):
        await client.request("POST", "ftp://127.0.0.1/x", {}, b"{}", **KW)
    await client.close()


async def test_cancelled_request_drops_its_connection(serve) -> None:
    srv, base = await serve(lambda c, r, req: None if c == 0 else OK)
    client = HttpClient("p")
    task = asyncio.create_task(client.request("POST", f"{base}/x", {}, b"{}", **KW))
    async with asyncio.timeout(5):
        while not srv.requests:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await srv.wait_closed(1)
    resp = await client.request("POST", f"{base}/y", {}, b"{}", **KW)
    assert await resp.read() == b'{"ok":true}' and len(srv.conns) == 2
    await client.close()


async def test_idle_connections_are_closed_after_keepalive(serve) -> None:
    srv, base = await serve(lambda c, r, req: OK)
    client = HttpClient("p", keepalive_s=0.05)
    assert await (await client.request("POST", f"{base}/x", {}, b"{}", **KW)).read()
    await srv.wait_closed(1)  # the sweep closed it, nobody else did
    assert await (await client.request("POST", f"{base}/x", {}, b"{}", **KW)).read()
    assert len(srv.conns) == 2
    await client.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return key, crt


async def test_tls_verifies_the_server_certificate(serve, cert: tuple[Path, Path]) -> None:
    key, crt = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    srv, base = await serve(lambda c, r, req: OK, server_ctx)
    assert base.startswith("https://")
    untrusted = HttpClient("prov")  # the system trust store does not know this certificate
    with pytest.raises(UpstreamConnectError, match="cannot connect to provider 'prov'.*CERTIFICATE"):
        await untrusted.request("POST", f"{base}/x", {}, b"{}", **KW)
    trusting = HttpClient("prov", ssl_context=ssl.create_default_context(cafile=str(crt)))
    resp = await trusting.request("POST", f"{base}/x", {}, b"{}", **KW)
    assert await resp.read() == b'{"ok":true}'
    await untrusted.close()
    await trusting.close()


async def test_a_slow_stream_reader_pauses_the_socket(serve) -> None:
    from gateway.httpclient.response import PAUSE_AT

    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"x" * 65536
    srv, base = await serve(lambda c, r, req: head)
    client = HttpClient("p")
    resp = await client.request("POST", f"{base}/s", {}, b"{}", **KW)
    chunks = resp.chunks().__aiter__()
    transport = resp._conn.transport  # type: ignore[union-attr]
    for _ in range(PAUSE_AT // len(piece) + 4):
        srv.write(0, b"%x\r\n%s\r\n" % (len(piece), piece))
    async with asyncio.timeout(5):
        while transport.is_reading():
            await asyncio.sleep(0)
    assert resp._size >= PAUSE_AT  # nothing read yet: reading from the socket stopped
    first = await chunks.__anext__()
    assert len(first) >= PAUSE_AT and transport.is_reading()  # drained: reading resumes
    srv.write(0, b"0\r\n\r\n")
    rest = [c async for c in chunks]
    assert len(first) + sum(map(len, rest)) == len(piece) * (PAUSE_AT // len(piece) + 4)
    await client.close()
