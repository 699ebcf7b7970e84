"""`state.redis_url` forms: checked at config time (what redis-py would reject or misread, never
quoting the URL, which may hold a password), and `unix://` sockets end to end (the URL used to
lose its `//` on the way to redis-py, so a socket path never connected)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.config.loader import redis_url_problems
from gateway.limits.connection import split_cluster_url
from tests.e2e.conftest import settle
from tests.e2e.support import KEY_LIM, auth, build, config, fire, say, usage_answer
from tests.fakes import FakeOpenAI

RPM = 5  # KEY_LIM's limit in tests/e2e/support.config


@pytest.mark.parametrize("url, plain, cluster", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", False),
    ("unix:///run/redis/redis.sock?db=2", "unix:///run/redis/redis.sock?db=2", False),
    ("redis:///0", "redis:///0", False),  # no host: redis-py's localhost
    ("redis+cluster://h:7000", "redis://h:7000", True),
    ("rediss://h:7000/0?cluster=1&ssl_ca_certs=ca.pem", "rediss://h:7000/0?ssl_ca_certs=ca.pem", True),
])
def test_split_cluster_url_keeps_the_url_redis_py_reads(url: str, plain: str, cluster: bool) -> None:
    assert split_cluster_url(url) == (plain, cluster)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://:pw@redis:6379", "rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem",
    "rediss://h/0?ssl_cert_reqs=required&ssl_check_hostname=false", "unix:///run/redis.sock?db=1",
    "redis+cluster://h:7000", "redis://h:7000?cluster=1",
])
def test_good_urls_have_no_problems(url: str) -> None:
    assert redis_url_problems(url) == []


@pytest.mark.parametrize("url, problem", [
    ("http://h:6379", "the scheme must be redis://, rediss://, unix://"),
    ("h:6379", "the URL must start with redis://"),
    ("redis://h/cache", "the database in the path must be a number (e.g. /0)"),
    ("redis://h?db=x", "redis-py cannot read the URL"),
    ("redis://h:port/0", "the port is not a number"),
    ("rediss://h?ssl_cert_reqs=strict", "ssl_cert_reqs must be one of none, optional, required"),
    ("rediss://h?ssl_check_hostname=maybe", "ssl_check_hostname must be one of 0, 1, true, false"),
    ("redis://h:7000?cluster=y", "cluster must be one of 0, 1, true, false, yes, no"),
    ("unix:///run/redis.sock?cluster=1", "a cluster is not reached through a unix socket"),
])
def test_bad_urls_are_named(url: str, problem: str) -> None:
    problems = redis_url_problems(url)
    assert len(problems) == 1 and problem in problems[0], problems


def test_check_config_reports_the_url_without_its_password() -> None:
    text = """
state: {redis_url: "rediss://:${PW}@redis.internal:6380/cache?ssl_cert_reqs=yes"}
providers:
  up: {adapter: openai, base_url: "http://127.0.0.1:9/v1", api_key: none}
routes:
  "up/*": {targets: [{provider: up}]}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={"PW": "hunter2-secret"})
    problems = info.value.problems
    assert sorted(problems) == sorted([
        "state.redis_url: ssl_cert_reqs must be one of none, optional, required",
        "state.redis_url: the database in the path must be a number (e.g. /0)",
    ])
    assert "hunter2-secret" not in str(info.value)


# ----------------------------------------------------------------------------- unix sockets


@pytest.fixture(scope="module")
def socket_redis() -> Iterator[Path]:
    """A redis-server listening on a unix socket only (`--port 0`), for this module."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    where = Path(tempfile.mkdtemp(prefix="modelyard-redis-sock-"))
    sock = where / "redis.sock"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(where)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-s", str(sock), "PING"], capture_output=True, text=True,
                             check=False).stdout.strip() != "PONG":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not come up on its unix socket")
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(where, ignore_errors=True)


async def test_limits_and_usage_over_a_unix_socket(socket_redis: Path, aiohttp_client: Any) -> None:
    """Two gateways share one Redis through `unix://`: rpm 5 with 6 requests gives exactly five
    200s and one 429, and the bucket and the usage records are in that Redis."""
    url = f"unix://{socket_redis}?db=3"
    direct = aioredis.from_url(url)
    await direct.flushdb()
    async with FakeOpenAI(default=usage_answer) as fake:
        cfg = config(fake.base_url, url, state={"redis_url": url, "on_redis_error": "closed"})
        gws = [await aiohttp_client(create_app(build(cfg))) for _ in range(2)]
        results = await fire(RPM + 1, lambda i: gws[i % 2].post(
            "/v1/chat/completions", json=say("hi"), headers=auth(KEY_LIM)))
        statuses = sorted(r.status for r in results)
        assert statuses == [200] * RPM + [429]
        refused = next(r for r in results if r.status == 429)
        assert (await refused.json())["error"]["code"] == "rate_limit_exceeded"
        remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in results
                           if r.status == 200)
        assert remaining == list(range(RPM))  # one shared bucket
        for gw in gws:
            await settle(gw)
    keys = sorted(k.decode() for k in await direct.keys("*"))
    assert "my:rl:{k:limited}:key:limited" in keys
    stream = [k for k in keys if k.endswith(":stream")]
    assert len(stream) == 1
    assert await direct.xlen(stream[0]) == RPM + 1  # the refused request is recorded too
    await direct.aclose()


@pytest.mark.parametrize("secret", ["Zm9v/YmFy+c2VjcmV0=", "pq?zx#w0rd9", "us:er@pw", "50%off7", "abc"])
def test_no_problem_quotes_a_password_whatever_its_characters(secret: str) -> None:
    """A password with a reserved character, not percent-encoded, moves the URL's parts around
    (the path, the port or the query may then hold a piece of it): no message shows any."""
    for url in (f"redis://:{secret}@redis.internal:6379/0", f"rediss://user:{secret}@h:6380/0",
                f"redis://:{secret}@h:6379/db?ssl_cert_reqs=x", f"redis://{secret}@h/0"):
        for problem in redis_url_problems(url):
            for piece in {secret, *[p for p in re.split(r"[/?#@:%+=]", secret) if len(p) > 2]}:
                assert piece not in problem, (url, problem)
    bad = redis_url_problems("redis://:Zm9vYmFy/c2VjcmV0K3Bhc3M=@redis.internal:6379/0")
    assert bad and "percent-encode" in bad[0]
