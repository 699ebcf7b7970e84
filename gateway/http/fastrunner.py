"""The listening side of the lean server: `FastServer` makes a `FastProtocol` per connection,
closes keep-alive connections left idle, and drains them all at shutdown together with the
connections aiohttp serves; `FastRunner` is the `aiohttp.web.AppRunner` whose sockets speak it
(`modelyard serve` and the test fixtures use it)."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.http.fastserver import FastProtocol
from gateway.http.keys import STATE
from gateway.streaming import cut_at_shutdown

KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this long
SWEEP_S = 5.0  # how often idle connections are looked for


class FastServer:
    """The protocol factory a listening socket is created with; wraps aiohttp's `web.Server`,
    which serves the connections handed over."""

    def __init__(self, inner: web.Server, app: web.Application) -> None:
        self.inner = inner
        self.state = app[STATE]
        self.loop = asyncio.get_running_loop()
        self.conns: set[FastProtocol] = set()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> FastProtocol:
        if self._sweeper is None and not self.closing:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)
        return FastProtocol(self)

    def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than `KEEPALIVE_S`."""
        cutoff = self.loop.time() - KEEPALIVE_S
        for conn in list(self.conns):
            if conn.task is None and conn.last < cutoff:
                conn._close()
        self._sweeper = None if self.closing else self.loop.call_later(SWEEP_S, self._sweep)

    @property
    def connections(self) -> list[Any]:
        return [*self.conns, *self.inner.connections]

    def pre_shutdown(self) -> None:
        """Idle connections close now, busy ones after their answer."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.inner.pre_shutdown()
        for conn in list(self.conns):
            conn.close_when_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Requests still running get `timeout` seconds, then are cancelled."""
        self.pre_shutdown()
        tasks = {c.task for c in self.conns if c.task is not None}
        await asyncio.gather(self.inner.shutdown(timeout), self._finish(tasks, timeout))
        for conn in list(self.conns):
            conn._close()
        self.conns.clear()

    @staticmethod
    async def _finish(tasks: set[asyncio.Task[None]], timeout: float | None) -> None:
        """Requests still running get `timeout` seconds (alongside aiohttp's), then are cut."""
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            cut_at_shutdown(task)  # recorded and answered as cut by the shutdown
        if late:
            await asyncio.wait(late, timeout=1.0)


class FastRunner(web.AppRunner):
    """An AppRunner whose listening sockets speak `FastProtocol` (the app must carry STATE)."""

    async def _make_server(self) -> Any:
        inner = await super()._make_server()
        return FastServer(inner, self.app)
