"""`state.redis_url: rediss://...` end to end: real gateways against a real redis-server that
speaks TLS only (`--port 0 --tls-port N`, certificate from a throwaway CA, `requirepass`).

Nothing here can reach Redis in plain text: a request that is limited across two gateways or
a usage record found in Redis went over TLS, with the server's certificate verified against
`?ssl_ca_certs=` and the password from the URL. A CA that did not sign the server's
certificate makes Redis unreachable: the gateway follows `state.on_redis_error`, and neither
its log nor its answers show the URL's password.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.app import create_app
from gateway.limits.connection import connect
from tests.e2e.conftest import settle
from tests.e2e.support import (
    KEY_FREE, KEY_LIM, MASTER, PRICE, auth, build, config, eventually, fire, say, usage_answer,
)
from tests.fakes import FakeOpenAI
from tests.redis_fixture import TestCA, TlsRedisServer

PASSWORD = "secret-tls-4f9d2c"  # the server's requirepass; never in a log line or an answer
RPM = 5  # KEY_LIM's limit in tests/e2e/support.config

Gateway = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture(scope="session")
def tls_redis() -> Iterator[TlsRedisServer]:
    """A TLS-only redis-server with a password, for the whole session; stopped and its
    directory (certificates, keys) removed at the end."""
    server = TlsRedisServer(password=PASSWORD)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def other_ca() -> Iterator[TestCA]:
    """A second self-signed CA, which did not sign the server's certificate."""
    where = Path(tempfile.mkdtemp(prefix="modelyard-other-ca-"))
    try:
        yield TestCA.create(where, "other")
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def tls_url(tls_redis: TlsRedisServer) -> str:
    """The server's `rediss://:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA`, flushed."""
    assert tls_redis.cli("FLUSHALL") == "OK"
    return tls_redis.url


@pytest.fixture
async def direct(tls_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client of the test's own on the same TLS server."""
    client = aioredis.from_url(tls_url)
    yield client
    await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=usage_answer) as f:
        yield f


@pytest.fixture
def make_gateway(aiohttp_client: Any, fake: FakeOpenAI) -> MakeGateway:
    async def make(redis_url: str, on_redis_error: str = "open") -> Gateway:
        cfg = config(fake.base_url, redis_url, state={
            "redis_url": redis_url, "on_redis_error": on_redis_error, "redis_budget_ms": 500},
            server={"max_body_mb": 1, "shutdown_grace_s": 0.5})  # records Redis never takes
        app = create_app(build(cfg))
        return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})

    return make


async def chat(gw: Gateway, key: str, text: str = "hi") -> tuple[int, CIMultiDict[str], Any]:
    r = await gw.post("/v1/chat/completions", json=say(text), headers=auth(key))
    return r.status, CIMultiDict(r.headers), await r.json()


async def redis_up(gw: Gateway) -> float:
    text = await (await gw.get("/metrics")).text()
    m = re.search(r"^modelyard_redis_up (\S+)$", text, re.M)
    assert m, "modelyard_redis_up is not exported"
    return float(m.group(1))


async def test_the_server_speaks_tls_only(tls_redis: TlsRedisServer) -> None:
    """The premise of every test below: the port is TLS only (a plain-text client gets no
    answer) and the server wants the password."""
    assert tls_redis.cli("PING") == "PONG"
    plain = aioredis.Redis(port=tls_redis.port, password=PASSWORD, socket_timeout=2,
                           socket_connect_timeout=2, retry=None)
    with pytest.raises(RedisConnectionError):
        await plain.ping()
    await plain.aclose()
    no_password, _ = connect(tls_redis.url.replace(f":{PASSWORD}@", ""))
    with pytest.raises(AuthenticationError):
        await no_password.ping()
    await no_password.aclose()


async def test_hostname_is_verified_by_default() -> None:
    """A certificate signed by the trusted CA but for another name is refused (redis-py's
    `ssl_check_hostname` defaults to on); `?ssl_check_hostname=false` accepts it."""
    server = TlsRedisServer(san="DNS:redis.example.internal").start()
    try:
        checked, _ = connect(server.url)
        with pytest.raises(RedisConnectionError) as caught:
            await checked.ping()
        await checked.aclose()
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert "IP address mismatch" in str(caught.value)
        unchecked, _ = connect(server.url_with(ssl_check_hostname="false"))
        assert await unchecked.ping() is True
        await unchecked.aclose()
        # without the name check the chain is still verified
        stranger = TestCA.create(server.dir, "stranger")
        unchained, _ = connect(server.url_with(ca_certs=stranger.cert, ssl_check_hostname="false"))
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await unchained.ping()
        await unchained.aclose()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


async def test_client_certificate_from_the_url() -> None:
    """Mutual TLS: a server that requires client certificates takes the one named by
    `?ssl_certfile=&ssl_keyfile=` and refuses a client without one."""
    server = TlsRedisServer(auth_clients=True).start()
    try:
        assert server.cli("PING") == "PONG"
        without, _ = connect(server.url)
        with pytest.raises(RedisConnectionError):
            await without.ping()
        await without.aclose()
        assert server.client_cert and server.client_key
        with_cert, _ = connect(server.url_with(ssl_certfile=str(server.client_cert),
                                               ssl_keyfile=str(server.client_key)))
        assert await with_cert.ping() is True
        await with_cert.aclose()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


async def test_rate_limit_exact_across_two_gateways_over_tls(
        tls_url: str, make_gateway: MakeGateway, direct: aioredis.Redis) -> None:
    """rpm 5, 6 requests at once over two gateways sharing the TLS Redis: exactly 5 accepted,
    one 429 with Retry-After; the bucket lives in that Redis. (Per-process limits, the
    fallback, would have accepted all six.)"""
    gws = [await make_gateway(tls_url), await make_gateway(tls_url)]
    for gw in gws:
        assert await redis_up(gw) == 1
    results = await fire(RPM + 1, lambda i: chat(gws[i % 2], KEY_LIM))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * RPM + [429]
    [(_, headers, body)] = [r for r in results if r[0] == 429]
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "key" in body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == str(RPM)
    for status, h, b in results:
        if status == 200:
            assert b["choices"][0]["message"]["content"] == "Hello"
            assert h["x-modelyard-provider"] == "up"
            assert h["x-ratelimit-limit-requests"] == str(RPM)
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in results
                       if s == 200)
    assert remaining == list(range(RPM))  # 4, 3, 2, 1, 0 in some order: one shared bucket

    for gw in gws:
        await settle(gw)
    bucket = "my:rl:{k:limited}:key:limited"
    assert [k.decode() for k in await direct.keys("my:rl:*")] == [bucket]
    fields = {k.decode(): float(v) for k, v in (await direct.hgetall(bucket)).items()}
    assert 0 <= fields["r"] < 1  # all five requests taken (plus a refill of milliseconds)
    assert fields["ts"] > 0
    for gw in gws:
        assert await redis_up(gw) == 1  # never fell back to per-process limits


async def test_usage_records_land_in_redis_over_tls(
        tls_url: str, make_gateway: MakeGateway, direct: aioredis.Redis) -> None:
    gw = await make_gateway(tls_url)
    ids = []
    for p, c in ((100, 10), (200, 20), (300, 30)):
        status, headers, _ = await chat(gw, KEY_FREE, f"usage {p} {c}")
        assert status == 200
        ids.append(headers["x-request-id"])
    await settle(gw)

    r = await gw.get("/admin/usage?group_by=key,model", headers=auth(MASTER))
    assert r.status == 200
    [row] = (await r.json())["data"]
    cost = (600 * PRICE["input"] + 60 * PRICE["output"]) / 1e6
    assert row["key"] == "free" and row["model"] == "priced/m"
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"],
            row["total_tokens"]) == (3, 600, 60, 660)
    assert row["cost_usd"] == pytest.approx(cost)

    # the same records, read straight from the TLS Redis
    stream = [orjson.loads(d[b"r"]) for _, d in await direct.xrange("modelyard:{usage}:stream")]
    assert [s["request_id"] for s in stream] == ids
    assert [(s["prompt_tokens"], s["completion_tokens"]) for s in stream] == [
        (100, 10), (200, 20), (300, 30)]
    assert {s["key_id"] for s in stream} == {"free"}
    totals = {k.decode(): float(v)
              for k, v in (await direct.hgetall("modelyard:{usage}:key:free")).items()}
    assert totals["total|requests"] == 3 and totals["total|prompt_tokens"] == 600
    assert totals["total|cost_usd"] == pytest.approx(cost)


async def test_untrusted_certificate_is_refused_by_the_client(
        tls_redis: TlsRedisServer, other_ca: TestCA) -> None:
    """The gateway's own client (gateway.limits.connection.connect) verifies the server's
    certificate by default: with a CA that did not sign it, the handshake fails with
    CERTIFICATE_VERIFY_FAILED, and the error does not carry the URL's password."""
    good, _ = connect(tls_redis.url)
    bad, _ = connect(tls_redis.url_with(ca_certs=other_ca.cert))
    try:
        assert await good.ping() is True
        with pytest.raises(RedisConnectionError) as caught:
            await bad.ping()
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)
    finally:
        await good.aclose()
        await bad.aclose()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_untrusted_certificate_follows_on_redis_error_without_leaking_the_password(
        mode: str, tls_redis: TlsRedisServer, tls_url: str, other_ca: TestCA,
        make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    """The URL trusts a CA that did not sign the server's certificate: the TLS handshake fails
    (no plain-text retry, no unverified connection), so Redis is unreachable and the gateway
    does what `state.on_redis_error` says."""
    caplog.set_level(logging.DEBUG)
    url = tls_redis.url_with(ca_certs=other_ca.cert)
    assert PASSWORD in url
    gw = await make_gateway(url, on_redis_error=mode)
    assert await redis_up(gw) == 0  # known at start-up, before any request
    answers: list[str] = []

    status, headers, body = await chat(gw, KEY_LIM)
    answers.append(repr((list(headers.items()), body)))
    ready = await gw.get("/readyz")
    answers.append(await ready.text())
    if mode == "open":
        # served, with per-process limits (still exact in this one process)
        assert status == 200 and body["choices"][0]["message"]["content"] == "Hello"
        assert ready.status == 200
        more = await fire(RPM, lambda i: chat(gw, KEY_LIM))
        answers += [repr((list(h.items()), b)) for _, h, b in more]
        assert sorted(s for s, _, _ in more) == [200] * (RPM - 1) + [429]
        [(_, h429, b429)] = [r for r in more if r[0] == 429]
        assert b429["error"]["code"] == "rate_limit_exceeded" and int(h429["Retry-After"]) >= 1
    else:
        assert status == 503
        assert body["error"]["message"] == "rate-limit state store (Redis) is unavailable"
        assert ready.status == 503
        assert "Redis is unreachable" in answers[-1]
    answers.append(await (await gw.get("/metrics")).text())

    async def sink_tried() -> bool:  # the usage sink's write of these records failed too
        return any(m.startswith("usage: writing ") and "failed (ConnectionError)" in m
                   for m in (rec.getMessage() for rec in caplog.records))

    await eventually(sink_tried, 5.0, "a failed usage write logged")
    assert tls_redis.cli("DBSIZE") == "0"  # nothing reached Redis
    messages = [rec.getMessage() for rec in caplog.records]
    outage = "redis unavailable (ConnectionError); limits " + (
        "per replica in-process" if mode == "open" else "refuse with 503") + "; "
    said = [m for m in messages if m.startswith(outage)]
    assert len(said) == 1 and "CERTIFICATE_VERIFY_FAILED" in said[0], said  # and why
    for rec in caplog.records:
        dumped = repr(rec.__dict__) + rec.getMessage() + repr(rec.exc_info)
        assert PASSWORD not in dumped, rec
    assert PASSWORD not in caplog.text
    for text in answers:
        assert PASSWORD not in text
