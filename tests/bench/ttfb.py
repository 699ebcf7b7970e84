"""Time to first byte of streams, which wrk cannot see: a small aiohttp client.

`concurrency` workers send the streaming request back to back for `duration_s`; for each stream
the time from sending to the first body bytes, and the number of SSE events in the whole body
(the harness checks a stream really has 20+ chunks). Runs in the harness's own process, pinned
with the load generator, never on the CPU of the system under test.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from tests.bench.scenarios import Request


@dataclass
class TtfbResult:
    ttfb_ms: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


async def _worker(session: aiohttp.ClientSession, url: str, req: Request, deadline: float,
                  out: TtfbResult) -> None:
    headers = {"Content-Type": "application/json", **req.headers}
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=req.body, headers=headers) as resp:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                rest = await resp.read()
                if resp.status != 200 or not first:
                    raise ValueError(f"HTTP {resp.status}: {(first + rest)[:200]!r}")
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            out.errors += 1
            out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
            continue
        out.ttfb_ms.append((t1 - t0) * 1000)
        out.events.append((first + rest).count(b"data:"))


async def measure(url: str, req: Request, *, concurrency: int, duration_s: float) -> TtfbResult:
    out = TtfbResult()
    timeout = aiohttp.ClientTimeout(total=30)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout,
                                     auto_decompress=False) as session:
        deadline = time.perf_counter() + duration_s
        await asyncio.gather(*(_worker(session, url, req, deadline, out)
                               for _ in range(concurrency)))
    return out


def measure_sync(url: str, req: Request, *, concurrency: int, duration_s: float) -> TtfbResult:
    return asyncio.run(measure(url, req, concurrency=concurrency, duration_s=duration_s))
