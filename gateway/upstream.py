"""All upstream I/O behind one seam: pooled aiohttp client sessions and the in-process mock.

`Upstream.send()` performs one attempt and returns an `UpstreamResponse` whose status and headers
arrived within the first-byte deadline; client-library failures become `UpstreamError`s
(connect errors, resets, timeouts) so that the retry layer sees only the gateway's error tree.
"""
from __future__ import annotations

import asyncio
import random
from typing import AsyncIterator, Mapping, Protocol

import aiohttp

from gateway.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from gateway.mockserver import replies
from gateway.types import ProviderSpec, Target, UpstreamRequest, dumps, loads

_READ_SIZE = 2**16


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class _HttpResponse:
    __slots__ = ("resp", "status", "headers", "provider")

    def __init__(self, resp: aiohttp.ClientResponse, provider: str) -> None:
        self.resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.provider = provider

    async def read(self) -> bytes:
        try:
            return await self.resp.read()
        except TimeoutError:  # aiohttp's own total/read timers (ServerTimeoutError included)
            raise UpstreamTimeout(f"provider '{self.provider}' did not finish its answer within "
                                  f"the request's time budget", provider=self.provider) from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamProtocolError(f"provider '{self.provider}' cut the response short "
                                        f"({type(exc).__name__})", provider=self.provider) from None
        finally:
            self.resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self.resp.content
        try:
            while True:
                data = await content.readany()
                if not data:
                    return
                yield data
        except TimeoutError:  # aiohttp's own timers (our idle timer cancels the task instead)
            raise UpstreamTimeout(f"provider '{self.provider}' stream ran out of time",
                                  provider=self.provider) from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamProtocolError(f"provider '{self.provider}' cut the stream "
                                        f"({type(exc).__name__})", provider=self.provider) from None

    def close(self) -> None:
        resp = self.resp
        if resp.content.at_eof():
            resp.release()  # read to the end: the connection goes back to the pool
        else:
            resp.close()  # cut short (error, stall, client gone): drop the connection


class _LocalResponse:
    """The in-process mock provider's answer, paced like a real upstream."""

    __slots__ = ("status", "headers", "_frames", "_delay")

    def __init__(self, status: int, frames: list[bytes], delay_s: float, stream: bool) -> None:
        self.status = status
        self.headers = {"content-type": "text/event-stream" if stream else "application/json"}
        self._frames = frames
        self._delay = delay_s

    async def read(self) -> bytes:
        return b"".join(self._frames)

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, frame in enumerate(self._frames):
            if self._delay and i:
                await asyncio.sleep(self._delay)
            yield frame

    def close(self) -> None:
        self._frames = []


class Upstream:
    """One pooled `ClientSession` per provider (connection reuse, DNS cache), made at start-up."""

    def __init__(self, providers: Mapping[str, ProviderSpec]) -> None:
        self._providers = dict(providers)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for name, spec in self._providers.items():
            if spec.adapter == "mock":
                continue
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self._sessions[name] = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: dumps(o).decode(),
                auto_decompress=True, skip_auto_headers=("User-Agent",), trust_env=False)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def update(self, providers: Mapping[str, ProviderSpec]) -> list[aiohttp.ClientSession]:
        """Hot reload: keep the pooled connections of providers whose endpoint is unchanged (a
        new key or header is sent per request); return retired sessions to close later."""
        def same(name: str) -> bool:
            old, new = self._providers.get(name), providers.get(name)
            return old is not None and new is not None and \
                (old.base_url, old.adapter) == (new.base_url, new.adapter)

        retired = [s for n, s in self._sessions.items() if not same(n)]
        self._sessions = {n: s for n, s in self._sessions.items() if same(n)}
        self._providers = dict(providers)
        return retired

    async def send(self, ureq: UpstreamRequest, target: Target, *, connect_s: float,
                   first_byte_s: float, total_s: float) -> UpstreamResponse:
        provider = target.provider.name
        if ureq.url.startswith("mock://"):
            return await self._local(ureq, target, min(first_byte_s, total_s))
        session = self._sessions.get(provider)
        if session is None:
            await self.start_one(target.provider)
            session = self._sessions[provider]
        timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)
        try:
            async with asyncio.timeout(min(first_byte_s, total_s)):
                resp = await session.request(ureq.method, ureq.url, data=ureq.body,
                                             headers=ureq.headers, timeout=timeout)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeout(f"cannot connect to provider '{provider}' within "
                                  f"{connect_s:g}s (timeouts.connect_s)",
                                  provider=provider) from None
        except TimeoutError:
            raise UpstreamTimeout(f"provider '{provider}' did not answer within "
                                  f"{min(first_byte_s, total_s):.1f}s", provider=provider) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"cannot connect to provider '{provider}': {exc.strerror or exc}",
                                       provider=provider) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamConnectError(f"provider '{provider}' reset the connection "
                                       f"({type(exc).__name__})", provider=provider) from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"provider '{provider}' request failed: "
                                       f"{type(exc).__name__}", provider=provider) from None
        return _HttpResponse(resp, provider)

    async def start_one(self, spec: ProviderSpec) -> None:
        if spec.name not in self._sessions:
            self._sessions[spec.name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))

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
            return _LocalResponse(200, frames, float(opts.get("chunk_delay_ms", 0)) / 1000.0, True)
        return _LocalResponse(200, [dumps(replies.completion(body))], 0, False)


__all__ = ["Upstream", "UpstreamResponse", "UpstreamError"]
