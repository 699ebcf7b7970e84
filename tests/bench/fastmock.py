"""A fast upstream for the benchmark: raw asyncio HTTP/1.1 on uvloop, canned replies.

`python -m tests.bench.fastmock --port P [--chunk-gap-ms 1]` serves, on one port,
POST /v1/chat/completions (OpenAI JSON or SSE) and POST /v1/messages (Anthropic JSON or SSE).
The replies are built once at start-up by the built-in mocks' own reply functions for the
benchmark prompt, so they are the real wire formats; per request the mock only frames bytes.
It never parses JSON: `"stream": true` and `include_usage` are found with a regex. Streams send
one SSE event per HTTP chunk, `--chunk-gap-ms` apart (a model's tokens arrive spaced in time, so
every hop has to relay each event on its own, as in production).
"""
from __future__ import annotations

import argparse
import asyncio
import re
import signal

from gateway.mockserver import anthropic as anthropic_mock
from gateway.mockserver import replies
from gateway.types import dumps
from tests.bench.scenarios import ANTHROPIC_MODEL, MAX_TOKENS, OPENAI_MODEL, PROMPT

_STREAM = re.compile(rb'"stream"\s*:\s*true')
_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_MAX_HEAD = 65536


def _head(status: str, ctype: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{framing}\r\n"
            "Connection: keep-alive\r\n\r\n").encode()


def _full(body: bytes, status: str = "200 OK") -> bytes:
    return _head(status, "application/json", len(body)) + body


class Canned:
    """Every reply the mock can give, as ready bytes."""

    def __init__(self) -> None:
        messages = [{"role": "user", "content": PROMPT}]
        oa = {"model": OPENAI_MODEL, "messages": messages, "stream": True}
        self.openai_json = _full(dumps(replies.completion(oa)))
        self.openai_sse = list(replies.stream_chunks(oa, 1))
        self.openai_sse_usage = list(replies.stream_chunks(
            {**oa, "stream_options": {"include_usage": True}}, 1))
        an = {"model": ANTHROPIC_MODEL, "max_tokens": MAX_TOKENS, "messages": messages}
        message = anthropic_mock.build_message(an, "msg_bench0123456789abcdef0123")
        self.anthropic_json = _full(dumps(message))
        self.anthropic_sse = [f"event: {name}\ndata: ".encode() + dumps(data) + b"\n\n"
                              for name, data in anthropic_mock.stream_events(message, 1)]
        self.sse_head = _head("200 OK", "text/event-stream", None)
        self.ok = _full(b'{"status":"ok"}')
        self.not_found = _full(b'{"error":{"message":"not found","type":"not_found"}}',
                               "404 Not Found")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class MockProtocol(asyncio.Protocol):
    def __init__(self, canned: Canned, gap_s: float) -> None:
        self.canned = canned
        self.gap_s = gap_s
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a stream is being sent: later pipelined requests wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while self.transport is not None and not self.busy:
            parsed = self._parse()
            if parsed is None:
                return
            path, body, consumed = parsed
            del self.buf[:consumed]
            self._answer(path, body)

    def _parse(self) -> tuple[bytes, bytes, int] | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD and self.transport is not None:
                self.transport.close()
            return None
        head = bytes(self.buf[:end]).lower()
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
        start = end + 4
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
        if m:
            stop = start + int(m.group(1))
            return (path, bytes(self.buf[start:stop]), stop) if len(self.buf) >= stop else None
        if b"transfer-encoding: chunked" in head:
            return self._parse_chunked(path, start)
        return path, b"", start

    def _parse_chunked(self, path: bytes, pos: int) -> tuple[bytes, bytes, int] | None:
        body = bytearray()
        while True:
            nl = self.buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(bytes(self.buf[pos:nl]).split(b";")[0], 16)
            if len(self.buf) < nl + 2 + size + 2:
                return None
            if size == 0:
                return path, bytes(body), nl + 4
            body += self.buf[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2

    def _answer(self, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        c = self.canned
        anthropic = path.endswith(b"/messages")
        if not (anthropic or path.endswith(b"/chat/completions")):
            self.transport.write(c.ok if path in (b"/readyz", b"/healthz") else c.not_found)
            return
        if not _STREAM.search(body):
            self.transport.write(c.anthropic_json if anthropic else c.openai_json)
            return
        frames = c.anthropic_sse if anthropic else \
            (c.openai_sse_usage if _USAGE.search(body) else c.openai_sse)
        self.busy = True
        self.transport.write(c.sse_head + _chunk(frames[0]))
        self._next_frame(frames, 1)

    def _next_frame(self, frames: list[bytes], i: int) -> None:
        if self.transport is None:
            return
        if i == len(frames):
            self.transport.write(b"0\r\n\r\n")
            self.busy = False
            self._process()
            return
        self.transport.write(_chunk(frames[i]))
        if self.gap_s > 0:
            asyncio.get_running_loop().call_later(self.gap_s, self._next_frame, frames, i + 1)
        else:
            asyncio.get_running_loop().call_soon(self._next_frame, frames, i + 1)


async def serve(host: str, port: int, gap_ms: float) -> None:
    loop = asyncio.get_running_loop()
    canned = Canned()
    server = await loop.create_server(lambda: MockProtocol(canned, gap_ms / 1000), host, port,
                                      backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunk-gap-ms", type=float, default=1.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(args.host, args.port, args.chunk_gap_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
