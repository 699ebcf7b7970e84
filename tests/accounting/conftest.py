from __future__ import annotations

import subprocess
import time
from typing import AsyncIterator, Iterator

import pytest

from gateway.accounting.memory_store import MemoryUsageStore, UsageStore
from gateway.accounting.redis_store import RedisUsageStore
from tests.redis_fixture import RedisCluster, RedisServer, free_port


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


def _cluster_port() -> int:
    """A free port a cluster node can use: Redis Cluster needs port + 10000 for its bus, so
    the port must be <= 55535 (tests/redis_fixture.free_port may return more)."""
    while True:
        port = free_port()
        if port <= 55_535:
            return port


@pytest.fixture(scope="session")
def usage_cluster() -> Iterator[RedisCluster]:
    """A 3-node Redis Cluster on ports a cluster can use (see `_cluster_port`)."""
    cluster = RedisCluster()
    try:
        cluster.nodes = [RedisServer(port=_cluster_port(), cluster=True).start() for _ in range(3)]
        addrs = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in cluster.nodes[0].cli("cluster", "info"):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not become ready")
            time.sleep(0.05)
        yield cluster
    finally:
        cluster.stop()
