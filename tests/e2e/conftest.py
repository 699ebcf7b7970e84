"""Fixtures: a usage-reporting fake upstream and in-process gateways over it (memory or Redis)."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.http.keys import RESOURCES
from tests.e2e.support import build, config, usage_answer
from tests.fakes import FakeOpenAI

MakeGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=usage_answer) as f:
        yield f


@pytest.fixture
def make_gateway(aiohttp_client: Any, fake: FakeOpenAI) -> MakeGateway:
    """`await make_gateway(redis_url="", **config_changes)` → a TestClient on a fresh app."""

    async def make(redis_url: str = "", **changes: Any) -> TestClient[Any, Any]:
        app = create_app(build(config(fake.base_url, redis_url, **changes)))
        # like `modelyard serve`: a client that goes away cancels its handler
        return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})

    return make


@pytest.fixture(params=["memory", "redis"])
def mode_url(request: pytest.FixtureRequest) -> str:
    """Both state modes: '' (in-process) and a flushed real Redis."""
    if request.param == "memory":
        return ""
    return str(request.getfixturevalue("redis_url"))


async def settle(client: TestClient[Any, Any]) -> None:
    """Wait until what the gateway does after a response (record, reconcile) is done."""
    res = client.server.app[RESOURCES]
    await res.recorder.drain()
    limits = res.state.limits
    for holder in (limits, getattr(limits, "primary", None)):  # failover's and Redis's own
        bg = getattr(holder, "_bg", None)
        if bg is not None:
            await bg.drain()
    await res.sink.flush(timeout_s=5)
