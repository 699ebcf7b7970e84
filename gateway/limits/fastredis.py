"""A lean, pipelined EVALSHA client for a standalone Redis (the rate-limit hot path).

redis-py costs ~130 µs of CPU per command (pool locking, packing, response handling). This
client keeps ONE asyncio connection per backend: every call packs its command with
`hiredis.pack_command`, writes it and awaits a future; replies are parsed by a
`hiredis.Reader` and resolve the futures in FIFO order (Redis answers in order on a
connection). A caller that times out or is cancelled leaves its future behind: the reply
that arrives for it is dropped, so the order of the others never shifts.

Only for `redis://` URLs without cluster mode (`fast_target` returns None otherwise; TLS
and Cluster stay on redis-py). Errors: a dropped or refused connection raises
`redis.exceptions.ConnectionError` (pending calls fail with it, the next call reconnects);
an error reply raises `ResponseError` (`NoScriptError` for NOSCRIPT).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.limits.connection import split_cluster_url

log = logging.getLogger(__name__)
# Commands sent while others are in flight are held and written together when the event-loop
# iteration ends, or as soon as FLUSH_AT of them are held: Redis starts on the first ones
# while the gateway still works through the iteration, instead of the gateway waiting idle for
# the replies afterwards (side by side at concurrency 16: +4 % requests per second over
# holding them all; 2, 4 and 6 cost more in writes than they gain, 12 gains less).
FLUSH_AT = 8
# one command as RESP bytes. hiredis's stub types the argument as a 1-tuple; it takes any tuple
# of str/bytes/numbers
pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class FastTarget:
    """Where and how to connect; `password` never appears in the repr."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"FastTarget({self.host}:{self.port}/{self.db})"


def fast_target(url: str) -> FastTarget | None:
    """The target of a standalone `redis://` URL; None for TLS, Cluster or anything unusual."""
    plain, cluster = split_cluster_url(url)
    parts = urlsplit(plain)
    if cluster or parts.scheme != "redis" or not parts.hostname:
        return None
    db = 0
    path = parts.path.strip("/")
    query = dict(parse_qsl(parts.query))
    try:
        if path:
            db = int(path)
        elif "db" in query:
            db = int(query["db"])
        port = parts.port or 6379
    except ValueError:
        return None
    user = unquote(parts.username) if parts.username else None
    pw = unquote(parts.password) if parts.password is not None else None
    return FastTarget(parts.hostname, port, db, user, pw)


def _error(reply: hiredis.ReplyError) -> ResponseError:
    msg = str(reply)
    return NoScriptError(msg) if msg.startswith("NOSCRIPT") else ResponseError(msg)


class _Protocol(asyncio.Protocol):
    """One connection: writes packed commands, resolves futures in reply order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = self._loop = loop
        self._reader = hiredis.Reader()
        # (future, sent at, deadline or 0.0), in send order: replies come back in this order
        self.pending: deque[tuple[asyncio.Future[Any], float, float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._watch: asyncio.TimerHandle | None = None  # one timer for every pending deadline
        self._watch_at = 0.0
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def send(self, packed: bytes, timeout_s: float = 0.0) -> asyncio.Future[Any]:
        """Write one command; its future fails with `TimeoutError` after `timeout_s` (0: never)
        without a timer of its own: one watchdog serves every pending deadline."""
        return self.send_many(packed, 1, timeout_s)[0]

    def send_many(self, packed: bytes, count: int,
                  timeout_s: float = 0.0) -> list[asyncio.Future[Any]]:
        """Write `count` packed commands in one write: one future per command, in order."""
        if self.closed or self.transport is None:
            raise RedisConnectionError("fast redis connection is closed")
        now = self._loop.time()
        deadline = now + timeout_s if timeout_s else 0.0
        futs: list[asyncio.Future[Any]] = []
        for _ in range(count):
            fut: asyncio.Future[Any] = self._loop.create_future()
            self.pending.append((fut, now, deadline))
            futs.append(fut)
        if deadline and (self._watch is None or deadline < self._watch_at):
            self._arm(deadline)
        out = self._out
        if not out and len(self.pending) == count:  # nothing in flight: no one to wait for
            self.transport.write(packed)
            return futs
        out.append(packed)
        if len(out) == 1:
            self._loop.call_soon(self._flush)
        elif len(out) >= FLUSH_AT:
            self._flush()  # the call_soon above then finds nothing to write
        return futs

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _arm(self, when: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch_at = when
        self._watch = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the futures whose deadline passed (their replies are skipped when they come);
        come back at the next deadline still pending."""
        self._watch = None
        now = self._loop.time()
        nearest = 0.0
        for fut, _, deadline in self.pending:
            if not deadline or fut.done():
                continue
            if deadline <= now:
                fut.set_exception(TimeoutError())
            elif not nearest or deadline < nearest:
                nearest = deadline
        if nearest:
            self._arm(nearest)

    def data_received(self, data: bytes) -> None:
        reader, pending = self._reader, self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as err:
                log.warning("redis protocol error on the fast path: %s", err)
                self.abort()
                return
            if reply is False:
                return
            if not pending:
                log.warning("redis reply without a pending request; dropping the connection")
                self.abort()
                return
            fut = pending.popleft()[0]
            if fut.done():  # its caller timed out or was cancelled
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail_pending(exc)

    def fail_pending(self, exc: BaseException | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        pending, self.pending = self.pending, deque()
        for fut, _, _ in pending:
            if not fut.done():
                err = RedisConnectionError(f"redis connection lost: {exc or 'closed'}")
                fut.set_exception(err)

    def stale(self, now: float, limit_s: float) -> bool:
        return bool(self.pending) and now - self.pending[0][1] > limit_s

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.fail_pending(None)


class FastRedis:
    """Pipelined EVALSHA over one lazily (re)connected connection. Not for TLS or Cluster.

    `reply_timeout_s`: when the oldest unanswered request is older than this, the next call
    drops the connection (its pending calls fail) and reconnects, like redis-py's socket
    timeout. `evalsha(..., timeout_s=)` bounds one call without a timer per call.
    """

    def __init__(self, target: FastTarget, *, connect_timeout_s: float = 2.0,
                 reply_timeout_s: float = 2.0) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"FastRedis({self.target!r})"

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[str | int | float],
                      timeout_s: float = 0.0) -> Any:
        """Run a loaded script. `timeout_s` (0: unbounded) bounds the whole call, a reconnect
        included, and raises `TimeoutError` when it runs out."""
        return await self.call(pack(("EVALSHA", sha, len(keys), *keys, *args)), timeout_s)

    async def call(self, packed: bytes, timeout_s: float = 0.0) -> Any:
        """Run one packed command (`pack`); `timeout_s` as for `evalsha`."""
        proto = await self._ready(timeout_s)
        return await proto.send(packed, timeout_s)

    def call_now(self, packed: bytes, timeout_s: float = 0.0) -> asyncio.Future[Any] | None:
        """`call` without a coroutine when the connection is open and answering: the reply's
        future, or None when the connection must first be (re)opened (then `await call`)."""
        proto = self._proto
        if proto is None or proto.closed or proto.stale(proto.loop.time(), self.reply_timeout_s):
            return None
        return proto.send(packed, timeout_s)

    async def evalsha_many(self, sha: str,
                           calls: Sequence[tuple[Sequence[str], Sequence[str | int | float]]],
                           timeout_s: float = 0.0) -> list[Any]:
        """Run the script once per (keys, args), all in one write; each call's reply or its
        exception, in order (one failing call does not fail the others)."""
        proto = await self._ready(timeout_s)
        packed = b"".join(pack(("EVALSHA", sha, len(keys), *keys, *args))
                          for keys, args in calls)
        futs = proto.send_many(packed, len(calls), timeout_s)
        out: list[Any] = []
        try:
            for fut in futs:
                try:
                    out.append(await fut)
                except (RedisError, TimeoutError) as exc:
                    out.append(exc)
        finally:
            for fut in futs:
                fut.cancel()  # the caller was cancelled: their replies are skipped when they come
        return out

    async def _ready(self, timeout_s: float) -> _Protocol:
        """The open connection, (re)connected within `timeout_s` when needed."""
        proto = self._proto
        if proto is None or proto.closed:
            return await self._reconnect(timeout_s)
        if proto.stale(proto.loop.time(), self.reply_timeout_s):
            log.warning("redis did not answer within %.1f s; reconnecting", self.reply_timeout_s)
            proto.abort()
            return await self._reconnect(timeout_s)
        return proto

    async def _reconnect(self, timeout_s: float) -> _Protocol:
        if not timeout_s:
            return await self._connection()
        async with asyncio.timeout(timeout_s):
            return await self._connection()

    async def _connection(self) -> _Protocol:
        if self._closed:
            raise RedisConnectionError("fast redis client is closed")
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.ensure_future(self._connect())
        # shielded: one caller's timeout must not abort the connect the others wait for
        return await asyncio.shield(task)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        t = self.target
        proto: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, proto = await loop.create_connection(lambda: _Protocol(loop), t.host, t.port)
                await self._handshake(proto)
            if self._closed:
                raise RedisConnectionError("fast redis client is closed")
        except BaseException as err:
            if proto is not None:
                proto.abort()
            if isinstance(err, (OSError, TimeoutError)):
                raise RedisConnectionError(
                    f"cannot connect to redis at {t.host}:{t.port}: {err!r}") from None
            raise
        self._proto = proto
        log.debug("fast redis connection to %s:%d open", t.host, t.port)
        return proto

    async def _handshake(self, proto: _Protocol) -> None:
        t = self.target
        futs = []
        if t.password is not None:
            auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
            futs.append(proto.send(pack(auth)))
        if t.db:
            futs.append(proto.send(pack(("SELECT", t.db))))
        for fut in futs:
            await fut

    async def close(self) -> None:
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proto, self._proto = self._proto, None
        if proto is not None and not proto.closed:
            proto.closed = True
            proto.fail_pending(None)
            if proto.transport is not None:
                proto.transport.close()
