"""All upstream I/O behind one seam: a pooled HTTP/1.1 client per provider and the in-process mock.

`Upstream.send()` performs one attempt and returns an `UpstreamResponse` whose status and headers
arrived within the first-byte deadline; transport failures come out as `UpstreamError`s
(connect errors, resets, timeouts) so that the retry layer sees only the gateway's error tree.
"""
from __future__ import annotations

import asyncio
import random
from typing import AsyncIterator, Mapping, Protocol

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.httpclient import HttpClient, stalled
from gateway.mockserver import replies
from gateway.types import ProviderSpec, Target, UpstreamRequest, dumps, loads

class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def idle(self, idle_s: float) -> None:
        """From now on, a silence longer than `idle_s` between chunks raises `UpstreamTimeout`."""

    def close(self) -> None: ...


class _LocalResponse:
    """The in-process mock provider's answer, paced like a real upstream."""

    __slots__ = ("status", "headers", "provider", "_frames", "_delay", "_idle_s")

    def __init__(self, status: int, frames: list[bytes], delay_s: float, stream: bool,
                 provider: str = "") -> None:
        self.status = status
        self.headers: Mapping[str, str] = {
            "content-type": "text/event-stream" if stream else "application/json"}
        self.provider = provider
        self._frames = frames
        self._delay = delay_s
        self._idle_s = 0.0

    async def read(self) -> bytes:
        return b"".join(self._frames)

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, frame in enumerate(self._frames):
            if self._delay and i:
                if self._idle_s and self._delay > self._idle_s:
                    await asyncio.sleep(self._idle_s)
                    raise stalled(self.provider, self._idle_s)
                await asyncio.sleep(self._delay)
            yield frame

    def idle(self, idle_s: float) -> None:
        self._idle_s = idle_s

    def close(self) -> None:
        self._frames = []


class Upstream:
    """One pooled `HttpClient` per provider (keep-alive connections), made at start-up."""

    def __init__(self, providers: Mapping[str, ProviderSpec]) -> None:
        self._providers = dict(providers)
        self._clients: dict[str, HttpClient] = {}

    async def start(self) -> None:
        for name, spec in self._providers.items():
            if spec.adapter != "mock":
                self._clients[name] = HttpClient(name)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def update(self, providers: Mapping[str, ProviderSpec]) -> list[HttpClient]:
        """Hot reload: keep the pooled connections of providers whose endpoint is unchanged (a
        new key or header is sent per request); return retired clients to close later."""
        def same(name: str) -> bool:
            old, new = self._providers.get(name), providers.get(name)
            return old is not None and new is not None and \
                (old.base_url, old.adapter) == (new.base_url, new.adapter)

        retired = [c for n, c in self._clients.items() if not same(n)]
        self._clients = {n: c for n, c in self._clients.items() if same(n)}
        self._providers = dict(providers)
        return retired

    async def send(self, ureq: UpstreamRequest, target: Target, *, connect_s: float,
                   first_byte_s: float, total_s: float) -> UpstreamResponse:
        if ureq.url.startswith("mock://"):
            return await self._local(ureq, target, min(first_byte_s, total_s))
        provider = target.provider.name
        client = self._clients.get(provider)
        if client is None:
            client = self._clients[provider] = HttpClient(provider)
        return await client.request(ureq.method, ureq.url, ureq.headers, ureq.body,
                                    connect_s=connect_s, first_byte_s=first_byte_s,
                                    total_s=total_s)

    async def _local(self, ureq: UpstreamRequest, target: Target, first_byte_s: float) -> _LocalResponse:
        opts = target.provider.options
        latency = float(opts.get("latency_ms", 0)) / 1000.0
        if latency:
            if latency > first_byte_s:
                await asyncio.sleep(first_byte_s)
                raise UpstreamTimeout(f"provider '{target.provider.name}' did not answer within "
                                      f"{first_byte_s:.1f}s", provider=target.provider.name)
            await asyncio.sleep(latency)
        body = loads(ureq.body or b"{}")
        fail_rate = float(opts.get("fail_rate", 0))
        if fail_rate and random.random() < fail_rate:
            err = {"error": {"message": "mock provider failure (fail_rate)", "type": "server_error",
                             "param": None, "code": None}}
            return _LocalResponse(503, [dumps(err)], 0, False)
        if ureq.url.endswith("/embeddings"):
            return _LocalResponse(200, [dumps(replies.embeddings(body))], 0, False)
        if ureq.stream:
            frames = list(replies.stream_chunks(body, int(opts.get("chunk_words", 1))))
            return _LocalResponse(200, frames, float(opts.get("chunk_delay_ms", 0)) / 1000.0, True,
                                  target.provider.name)
        return _LocalResponse(200, [dumps(replies.completion(body))], 0, False)


__all__ = ["Upstream", "UpstreamResponse", "UpstreamError"]
