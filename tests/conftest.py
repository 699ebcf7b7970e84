from __future__ import annotations

from typing import Iterator

import pytest

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
