"""One keep-alive connection: the llhttp parser's callbacks feed the answer in flight; one timer
per answer watches the first byte, the deadline and stalls."""
from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

import httptools

from gateway.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from gateway.httpclient.response import Response, stalled

if TYPE_CHECKING:
    from gateway.httpclient.client import Pool


class Stale(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; it parses every byte that arrives and hands it to the
    response in flight, so that a finished answer frees the connection at once."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.head_waiter: asyncio.Future[None] | None = None
        self.fields: list[tuple[bytes, bytes]] = []
        self.closed = False
        self.reused = False
        self.received = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.first_byte_s = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.resp is None:  # bytes nobody asked for: the connection is out of step
            self.abandon()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(
                f"provider '{self.pool.provider}' sent a malformed HTTP answer ({exc})",
                provider=self.pool.provider))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        resp = self.resp
        if resp is None:
            return
        provider = self.pool.provider
        if self.head_waiter is not None:  # no status line yet
            if self.reused and not self.received:
                self._fail(Stale())
            else:
                self._fail(UpstreamConnectError(
                    f"provider '{provider}' reset the connection (ServerDisconnected)",
                    provider=provider))
        elif resp._until_close:
            self.on_message_complete()  # the body ran until the server closed: complete
        else:
            what = "the stream" if resp._streaming else "the response short"
            self._fail(UpstreamProtocolError(f"provider '{provider}' cut {what} "
                                             f"(ServerDisconnected)", provider=provider))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.resp is None:  # an answer to no request (extra bytes after the last one)
            self.abandon()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        fields, self.fields = self.fields, []
        if status < 200:  # 100 Continue and friends: the real answer follows
            return
        resp = self.resp
        if resp is None:
            return
        headers = resp.headers
        framed = False
        for name, value in fields:
            key = name.decode("latin-1").lower()
            val = value.decode("latin-1")
            if key in headers:
                val = f"{headers[key]}, {val}"
            dict.__setitem__(headers, key, val)
            if key == "content-length" or key == "transfer-encoding":
                framed = True
        resp.status = status
        resp._until_close = not framed and status not in (204, 304)
        encoding = dict.get(headers, "content-encoding")
        if encoding is not None and encoding.strip().lower() in ("gzip", "deflate", "x-gzip"):
            resp._inflate = zlib.decompressobj(47)  # 32 + 15: gzip or zlib, told by the header
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._last = self.loop.time() if resp._idle_s else 0.0
            resp._feed(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None or resp.status < 200:
            return
        self.resp = None
        self._cancel_timer()
        try:
            resp._done()
        except zlib.error:
            resp._eof = False
            resp._fail(UpstreamProtocolError(f"provider '{self.pool.provider}' sent a corrupt "
                                             f"compressed body", provider=self.pool.provider))
            self.abandon()
            return
        if self.parser.should_keep_alive() and not resp._until_close and not self.closed:
            self.pool.release(self)
        else:
            self.abandon()

    # -- the client's side -------------------------------------------------------------------
    def start(self, resp: Response, head: bytes, first_byte_at: float, first_byte_s: float,
              ) -> asyncio.Future[None]:
        self.resp = resp
        self.received = False
        self.first_byte_s = first_byte_s
        self.head_waiter = waiter = self.loop.create_future()
        self.timer = self.loop.call_at(first_byte_at, self._on_timer)
        self.transport.write(head)
        return waiter

    def rearm(self, resp: Response) -> None:
        """Re-point the single timer at the response's next check (deadline or stall)."""
        self._cancel_timer()
        when = resp._deadline
        if resp._idle_s:
            when = min(when, resp._last + resp._idle_s)
        self.timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        resp = self.resp
        if resp is None:
            return
        provider = self.pool.provider
        now = self.loop.time()
        if self.head_waiter is not None:
            self._fail(UpstreamTimeout(f"provider '{provider}' did not answer within "
                                       f"{self.first_byte_s:.1f}s", provider=provider))
        elif now >= resp._deadline:
            what = "stream ran out of time" if resp._streaming else \
                "did not finish its answer within the request's time budget"
            self._fail(UpstreamTimeout(f"provider '{provider}' {what}", provider=provider))
        elif resp._idle_s and now >= resp._last + resp._idle_s:
            self._fail(stalled(provider, resp._idle_s))
        else:
            self.rearm(resp)

    def _fail(self, exc: BaseException) -> None:
        resp, self.resp = self.resp, None
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if resp is not None:
            resp._fail(exc)
        self.abandon()

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def abandon(self) -> None:
        """Drop the connection: it is in an unknown state (answer cut, timer fired, client gone)."""
        self._cancel_timer()
        self.resp = None
        self.head_waiter = None
        if not self.closed:
            self.closed = True
            self.transport.close()
