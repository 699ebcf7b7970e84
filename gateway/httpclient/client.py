"""Pools of keep-alive connections per origin, and the request call the gateway makes."""
from __future__ import annotations

import asyncio
import ssl
from typing import Mapping
from urllib.parse import urlsplit

from gateway.aio import running_loop
from gateway.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from gateway.httpclient.connection import Connection, Stale
from gateway.httpclient.response import Response

_SKIP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_URL_CACHE_MAX = 512


class Pool:
    """Idle keep-alive connections to one origin, most recently used first."""

    def __init__(self, client: HttpClient, host: str, port: int, tls: bool) -> None:
        self.client = client
        self.provider = client.provider
        self.host, self.port, self.tls = host, port, tls
        self.idle: list[Connection] = []
        self.sweeper: asyncio.TimerHandle | None = None

    def take(self) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        ssl_ctx = self.client.ssl_context() if self.tls else None
        _, conn = await loop.create_connection(
            lambda: Connection(self), self.host, self.port, ssl=ssl_ctx,
            server_hostname=self.host if self.tls else None)
        return conn  # type: ignore[return-value]

    def release(self, conn: Connection) -> None:
        if self.client.closed:
            conn.abandon()
            return
        conn.idle_since = conn.loop.time()
        self.idle.append(conn)
        if self.sweeper is None:
            self.sweeper = conn.loop.call_later(self.client.keepalive_s, self.sweep)

    def sweep(self) -> None:
        """Close connections idle for longer than `keepalive_s`; come back while some remain."""
        self.sweeper = None
        if not self.idle:
            return
        loop = self.idle[0].loop
        cutoff = loop.time() - self.client.keepalive_s
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.idle_since <= cutoff:
                conn.abandon()
            else:
                keep.append(conn)
        self.idle = keep
        if keep:
            self.sweeper = loop.call_later(self.client.keepalive_s, self.sweep)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abandon()


class HttpClient:
    """The connections of one provider (a pool per origin its URLs name)."""

    def __init__(self, provider: str, *, keepalive_s: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.provider = provider
        self.keepalive_s = keepalive_s
        self.closed = False
        self._pools: dict[tuple[str, int, bool], Pool] = {}
        self._urls: dict[str, tuple[Pool, str, str]] = {}
        self._ssl = ssl_context  # None: the system's trust store, made on the first https call

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def close(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._urls.clear()

    def _target(self, url: str) -> tuple[Pool, str, str]:
        hit = self._urls.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError(f"provider '{self.provider}' has an unusable URL scheme "
                                       f"'{parts.scheme}' (http or https)", provider=self.provider)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        key = (host, port, tls)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(self, host, port, tls)
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            authority = f"{authority}:{port}"
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        if len(self._urls) >= _URL_CACHE_MAX:
            self._urls.clear()
        hit = self._urls[url] = (pool, path, authority)
        return hit

    def _head(self, method: str, path: str, authority: str, headers: Mapping[str, str],
              body: bytes | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {authority}\r\n"]
        for name, value in headers.items():
            if name.lower() in _SKIP:
                continue
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                exc = UpstreamProtocolError(
                    f"provider '{self.provider}': the header '{name.strip()}' has a line break "
                    f"in its value; check the provider's headers and api_key in the config",
                    provider=self.provider)
                exc.retryable = exc.failover = False  # the same bytes would fail again
                raise exc
            lines.append(f"{name}: {value}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode()
        return head + body if body else head

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None, *, connect_s: float, first_byte_s: float,
                      total_s: float) -> Response:
        """Send one request; return once the status line and headers are in (within
        `first_byte_s`, connecting included); the body must then arrive within `total_s`."""
        if self.closed:
            raise UpstreamConnectError(f"provider '{self.provider}' client is closed",
                                       provider=self.provider)
        pool, path, authority = self._target(url)
        head = self._head(method, path, authority, headers, body)
        loop = running_loop()
        now = loop.time()
        first_byte_s = min(first_byte_s, total_s)
        first_byte_at, deadline = now + first_byte_s, now + total_s
        for _ in range(2):
            conn = pool.take()
            if conn is None:
                conn = await self._connect(pool, connect_s, first_byte_s, first_byte_at - loop.time())
            resp = Response(conn, self.provider, deadline)
            waiter = conn.start(resp, head, first_byte_at, first_byte_s)
            try:
                await waiter
            except Stale:
                continue  # the server had closed this idle connection: once more on a new one
            except BaseException:
                conn.abandon()
                raise
            if not resp._eof and resp._exc is None:
                conn.rearm(resp)
            return resp
        raise UpstreamConnectError(f"provider '{self.provider}' reset the connection "
                                   f"(ServerDisconnected)", provider=self.provider)

    async def _connect(self, pool: Pool, connect_s: float, first_byte_s: float,
                       left_s: float) -> Connection:
        provider = self.provider
        try:
            async with asyncio.timeout(max(min(connect_s, left_s), 0.0)):
                return await pool.connect()
        except TimeoutError:
            if connect_s <= left_s:
                raise UpstreamTimeout(f"cannot connect to provider '{provider}' within "
                                      f"{connect_s:g}s (timeouts.connect_s)",
                                      provider=provider) from None
            raise UpstreamTimeout(f"provider '{provider}' did not answer within "
                                  f"{first_byte_s:.1f}s", provider=provider) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamConnectError(f"cannot connect to provider '{provider}': {reason}",
                                       provider=provider) from None
