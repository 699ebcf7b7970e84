"""Fixtures for the state layer: one suite over the in-process and the Redis backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import pytest

from gateway.limits.memory import MemoryBackend
from gateway.limits.redis_backend import RedisBackend

# 2030-03-15 12:00:00 UTC: in the future, so Redis EXPIREAT of quota periods stays ahead
T0 = 1899806400.0


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Kit:
    """A backend under test, its clock, and a factory for another instance on the same store."""

    kind: str
    backend: MemoryBackend | RedisBackend
    clock: FakeClock
    another: Callable[[], Awaitable[MemoryBackend | RedisBackend]]


@pytest.fixture(params=["memory", "redis"])
async def kit(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Kit]:
    opened: list[RedisBackend] = []
    if request.param == "memory":
        mem = MemoryBackend(clock=clock)

        async def same() -> MemoryBackend | RedisBackend:
            return mem
        yield Kit("memory", mem, clock, same)
        return
    url = request.getfixturevalue("redis_url")

    async def fresh() -> MemoryBackend | RedisBackend:
        b = RedisBackend.from_url(url, clock=clock)
        await b.start()
        opened.append(b)
        return b
    first = await fresh()
    yield Kit("redis", first, clock, fresh)
    for b in opened:
        await b.close()
