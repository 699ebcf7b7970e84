from __future__ import annotations

from typing import Any, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseRunner, TestServer

from gateway.http.fastrunner import FastRunner
from gateway.http.keys import STATE

from tests.redis_fixture import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server shared by the session; tests use their own key prefixes or FLUSHALL."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for tests that stop and restart it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's factory, but a gateway app is served as `serve` serves it: through
    `FastRunner` (the lean protocol for the hot endpoints, aiohttp's for the rest)."""

    async def go(param: Any, *, server_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> Any:
        if isinstance(param, web.Application) and STATE in param:
            param = GatewayTestServer(param, **(server_kwargs or {}))
        return await aiohttp_client(param, **kwargs)

    return go


class GatewayTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return FastRunner(self.app, **kwargs)
