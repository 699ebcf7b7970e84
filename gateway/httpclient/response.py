"""One upstream answer as its reader sees it: status, headers, then the body whole or in chunks."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from gateway.errors import UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from gateway.httpclient.connection import Connection

PAUSE_AT = 1 << 20  # buffered stream bytes before reading from the socket pauses


def stalled(provider: str, idle_s: float) -> UpstreamTimeout:
    """A stream silent for longer than `timeouts.idle_s` (any upstream response says this)."""
    return UpstreamTimeout(f"the upstream stream stalled for more than {idle_s:g}s "
                           f"(timeouts.idle_s)", provider=provider)


class Headers(dict[str, str]):
    """Response headers: lower-case names; lookups ignore case; repeated fields joined by ', '."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)


class Response:
    """One upstream answer. `status` and `headers` are there when `HttpClient.request` returns;
    the body comes through `read()` (whole) or `chunks()` (as it arrives); `close()` always."""

    __slots__ = ("status", "headers", "provider", "_conn", "_buf", "_size", "_eof", "_exc",
                 "_waiter", "_deadline", "_idle_s", "_last", "_until_close", "_inflate",
                 "_streaming")

    def __init__(self, conn: Connection, provider: str, deadline: float) -> None:
        self.status = 0
        self.headers = Headers()
        self.provider = provider
        self._conn: Connection | None = conn
        self._buf: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = deadline
        self._idle_s = 0.0
        self._last = 0.0
        self._until_close = False
        self._inflate: Any = None
        self._streaming = False

    # -- the consumer's side --------------------------------------------------------------
    async def read(self) -> bytes:
        try:
            while not self._eof:
                if self._exc is not None:
                    raise self._exc
                await self._wait()
        except BaseException:
            self.close()
            raise
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        return data

    def chunks(self) -> Response:
        self._streaming = True
        return self

    def idle(self, idle_s: float) -> None:
        """From now on, a silence longer than `idle_s` between chunks ends the stream."""
        self._idle_s = idle_s
        conn = self._conn
        if conn is not None and not self._eof:
            self._last = conn.loop.time()
            conn.rearm(self)

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        buf = self._buf
        while not buf:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                raise StopAsyncIteration
            await self._wait()
        data = buf.popleft() if len(buf) == 1 else b"".join(buf)
        buf.clear()
        if self._size >= PAUSE_AT and self._conn is not None:
            self._conn.transport.resume_reading()
        self._size = 0
        return data

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not self._eof:
            conn.abandon()  # cut short (error, stall, client gone): the socket is dropped

    async def _wait(self) -> None:
        if self._conn is None:  # closed by its reader: nothing more will come
            raise UpstreamProtocolError(f"provider '{self.provider}' answer was closed",
                                        provider=self.provider)
        self._waiter = waiter = self._conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # -- the connection's side ------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None and not self._eof:
            self._exc = exc
            self._wake()

    def _feed(self, data: bytes) -> None:
        if self._inflate is not None:
            data = self._inflate.decompress(data)
            if not data:
                return
        self._buf.append(data)
        self._size += len(data)
        if self._waiter is not None:
            self._wake()
        if self._size >= PAUSE_AT and self._streaming and self._conn is not None:
            self._conn.transport.pause_reading()

    def _done(self) -> None:
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                self._buf.append(tail)
            self._inflate = None
        self._eof = True
        self._conn = None
        self._wake()
