"""A lean HTTP/1.1 server for the hot endpoints; aiohttp's server answers everything else.

aiohttp's server side was about half of the gateway's CPU per request (request and response
objects, the middleware chain, the router, the payload stream, the writer). The endpoints every
model call goes through — `POST /v1/chat/completions`, `/chat/completions`, `/v1/embeddings` —
are answered here instead, by a protocol that reads the request head itself and calls the same
pipeline, error bodies and request ids as the aiohttp handlers (`handlers.py`, `middleware.py`).

Only plain requests take this path: HTTP/1.1, a body framed by Content-Length, no
Transfer-Encoding, Content-Encoding, Expect or Upgrade, and a head made only of valid field names
and values (one regular expression decides). Anything else — another path or method, a chunked
or compressed body, a malformed head — hands the connection over to aiohttp's own protocol at the
start of that request with every byte of it: aiohttp answers it (its 400s, 404s and 405s
included) and keeps the connection from then on.

Which heads take this path and the request read from them: `hotrequest.py`. The listening side
(the protocol factory, keep-alive sweep, graceful shutdown, the `AppRunner` that `serve` and the
test fixtures use, so the whole test suite goes through this protocol): `fastrunner.py`.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp.tcp_helpers import tcp_keepalive

from gateway.errors import GatewayError
from gateway.http.handlers import check_content_type, context, decode_json, too_large
from gateway.http.hotrequest import MAX_HEAD, HotRequest, media_type, parse_head
from gateway.http.middleware import error_parts, internal_error_parts, request_ids
from gateway.pipeline import Reply

if TYPE_CHECKING:
    from gateway.http.fastrunner import FastServer

log = logging.getLogger(__name__)

MAX_BUFFERED = 256 * 1024  # pipelined bytes kept while a request is answered: then reading pauses
_OURS = frozenset(("content-type", "content-length", "transfer-encoding", "connection", "date",
                   "x-request-id"))
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_JSON = "application/json"


class _Date:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = ""

    def now(self) -> str:
        t = int(time.time())
        if t != self.second:
            self.second, self.value = t, email.utils.formatdate(t, usegmt=True)
        return self.value


_date = _Date()


class FastProtocol(asyncio.Protocol):
    """One client connection, until it is handed over to aiohttp (if ever)."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()  # received bytes not yet parsed (a head, pipelined requests)
        self.req: HotRequest | None = None
        self.task: asyncio.Task[None] | None = None
        self.keep = True
        self.skip = 0  # body bytes of an answered request still to discard
        self.last = self.loop.time()  # when the connection last became idle
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.head_sent = False  # the current answer's head went out

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        tcp_keepalive(transport)  # type: ignore[arg-type]  # dead peers found, as aiohttp does

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.conns.discard(self)
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: the request is recorded as cut (499)
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.req is None:
            self._continue()  # pipelined requests held while the client did not read

    def data_received(self, data: bytes) -> None:
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
            if not data:
                return
        req = self.req
        if req is not None:  # a request is being answered
            left = req.left
            if left:
                if len(data) <= left:
                    req.add(data)
                    return
                req.add(data[:left])
                data = data[left:]
            self._hold(data)  # pipelined: parsed once the answer is sent
            return
        if self.writing_paused:
            self._hold(data)  # the client does not read its answers: no new work meanwhile
            return
        self.buf += data
        self._next_request()

    def _hold(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_BUFFERED and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # ------------------------------------------------------------ requests
    def _next_request(self) -> None:
        """At a request boundary, with `buf` holding what came after the last request."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD or not (buf.startswith(b"POST ") or b"POST ".startswith(buf)) \
                    or b"\n\n" in buf or b"\n\r\n" in buf:  # a head ended by bare LFs
                self._hand_over()
            return
        try:
            parsed = parse_head(bytes(buf[:end]))
        except Exception:  # a bug here must not kill the connection: aiohttp judges the head
            log.exception("could not parse a request head on the lean path")
            parsed = None
        if parsed is None:
            self._hand_over()
            return
        req, self.keep = parsed
        del buf[:end + 4]
        length = req.length
        if length:
            if length > self.server.state.max_body:
                req.too_large = True
                req.left = length
                taken = min(length, len(buf))
                req.left -= taken
                del buf[:taken]
            elif len(buf) >= length:
                req.body = bytes(buf[:length])
                del buf[:length]
            else:
                req.body = bytearray(buf)
                req.left = length - len(buf)
                buf.clear()
        self.req = req
        self.task = self.loop.create_task(self._answer(req))

    def _hand_over(self) -> None:
        """aiohttp's protocol takes the connection, starting with every byte of this request."""
        transport = self.transport
        if transport is None:
            return
        data = bytes(self.buf)
        self.buf = bytearray()
        self.server.conns.discard(self)
        proto = self.server.inner()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self.writing_paused:
            proto.pause_writing()
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        if data:
            proto.data_received(data)

    async def _load(self, req: HotRequest) -> tuple[Any, int]:
        """The pipeline's body loader: the same checks, in the same order, as `read_json`."""
        ctype = req.headers.get("Content-Type")
        if ctype != _JSON:
            check_content_type(media_type(ctype))
        if req.too_large:
            raise too_large(self.server.state.max_body)
        if req.left:
            req.waiter = self.loop.create_future()
            await req.waiter
        return decode_json(req.body)

    async def _answer(self, req: HotRequest) -> None:
        server = self.server
        task = self.task
        inflight = server.state.inflight_tasks
        inflight.add(task)
        rid, own = request_ids(req.headers)
        self.head_sent = False
        try:
            pipeline = server.state.services.pipeline
            ctx = context(req.headers, rid, own)
            load = lambda: self._load(req)  # noqa: E731 - a closure is the cheapest loader
            if req.kind == "chat":
                reply = await pipeline.chat(ctx, req.headers, load)
            else:
                reply = await pipeline.embeddings(ctx, req.headers, load)
            if isinstance(reply, Reply):
                self._send(reply.status, reply.body, reply.headers, rid)
            else:
                await self._stream(reply, rid)
        except GatewayError as exc:
            self._send_error(partial(error_parts, exc, rid), rid)
        except asyncio.CancelledError:
            self.keep = False  # the client left, or the shutdown grace ran out: no answer
            raise
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid})
            self._send_error(partial(internal_error_parts, rid), rid)
        finally:
            inflight.discard(task)
            self._done(req)

    def _send_error(self, parts: Callable[[], tuple[int, bytes, dict[str, str]]],
                    rid: str) -> None:
        """The error answer; once an answer's head went out (a stream) the only signal left is
        closing the connection, and a connection is never left waiting without an answer."""
        if self.head_sent:
            self.keep = False
            return
        try:
            self._send(*parts(), rid)
        except Exception:
            log.exception("could not send the error answer", extra={"request_id": rid})
            self.keep = False

    def _done(self, req: HotRequest) -> None:
        self.req = self.task = None
        transport = self.transport
        if transport is None:
            return
        if not self.keep or self.server.closing:
            self._close()
            return
        self.skip = req.left  # a body the answer did not need (an auth error, a 413)
        req.left = 0
        self.last = self.loop.time()
        self._continue()

    def _continue(self) -> None:
        """Between requests: on to the next one, unless the client is not reading its answers
        (then `resume_writing` comes back here)."""
        transport = self.transport
        if self.writing_paused or transport is None or transport.is_closing():
            return
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        if self.buf:
            self._next_request()

    # ------------------------------------------------------------ answers
    def _head(self, status: int, headers: dict[str, str], rid: str, framing: str) -> bytes:
        lines = [(f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                  f"Date: {_date.now()}\r\nx-request-id: {rid}\r\n{framing}")]
        for k, v in headers.items():
            if k.lower() not in _OURS:
                lines.append(f"{k}: {v}\r\n")
        if not self.keep or self.server.closing:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        # never a failed answer for a header value that is not UTF-8 (request ids are cleaned
        # up front, in request_ids)
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _send(self, status: int, body: bytes, headers: dict[str, str], rid: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        ctype = headers.get("content-type", _JSON)
        head = self._head(status, headers, rid,
                          f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n")
        self.head_sent = True
        transport.write(head + body)

    async def _stream(self, reply: Any, rid: str) -> None:
        frames = reply.frames
        try:
            transport = self.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError
            head = self._head(200, reply.headers, rid,
                              f"Content-Type: {reply.headers.get('content-type', _JSON)}\r\n"
                              "Transfer-Encoding: chunked\r\n")
            self.head_sent = True
            transport.write(head)
            async for frame in frames:
                if transport.is_closing():
                    raise ConnectionResetError
                transport.write(b"%x\r\n%b\r\n" % (len(frame), frame))
                if self.writing_paused:
                    await self._drain()
            transport.write(b"0\r\n\r\n")
        except ConnectionResetError:
            self.keep = False  # the client left: closing the frames cancels the upstream call
        finally:
            await frames.aclose()
            reply.abandon()  # records and closes upstream if the frames never started

    async def _drain(self) -> None:
        self.drain_waiter = self.loop.create_future()
        try:
            await self.drain_waiter
        finally:
            self.drain_waiter = None

    # ------------------------------------------------------------ shutdown
    def close_when_idle(self) -> None:
        """Close now when no request is being answered, else after its answer."""
        if self.task is None:
            self._close()
        self.keep = False

    def _close(self) -> None:
        """Close once the answers written are sent; requests still held are dropped."""
        self.buf = bytearray()
        if self.transport is not None:
            self.transport.close()
