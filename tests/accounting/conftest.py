from __future__ import annotations

from typing import AsyncIterator

import pytest

from gateway.accounting.memory_store import MemoryUsageStore, UsageStore
from gateway.accounting.redis_store import RedisUsageStore


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    """The same suite runs against both stores."""
    s: UsageStore
    if request.param == "memory":
        s = MemoryUsageStore()
    else:
        s = RedisUsageStore(request.getfixturevalue("redis_url"), stream_maxlen=1000)
    yield s
    await s.close()
