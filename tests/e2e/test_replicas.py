"""Issue 5 and 6 across three gateway processes sharing one Redis: exact limits, keys created,
changed and revoked on one replica seen by all within a second, the CLI against a running
gateway, and usage recorded by every replica in one place."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, Iterator

import aiohttp
import pytest

from tests.e2e.procs import ROOT, Replicas
from tests.e2e.support import MASTER, auth, digest, eventually, fire, say
from tests.redis_fixture import RedisServer

SHARED = "sk-e2e-shared-rpm6-1a2b3c"  # one static key, rpm 6, used on all three replicas
OTHER = "sk-e2e-plain-9z8y7x"  # a static key without admin rights


@pytest.fixture(scope="module")
def redis3() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(redis3: RedisServer) -> Iterator[Replicas]:
    cfg = {
        "server": {"shutdown_grace_s": 1},
        "state": {"redis_url": redis3.url, "on_redis_error": "open"},
        "auth": {"master_key": MASTER, "keys": [
            {"id": "shared", "key": SHARED, "team": "s", "limits": {"rpm": 6}},
            {"id": "plain", "key": OTHER, "team": "p"}]},
        "providers": {"local": {"adapter": "mock"}},
        "routes": {"mock/*": {"targets": [{"provider": "local"}], "models": ["mock/echo"],
                              "price": {"input": 1.0, "output": 4.0}},
                   "other/*": {"targets": [{"provider": "local"}]}},
        "default_model": "mock/echo",
        "logging": {"access_log": False},
    }
    r = Replicas(cfg).start()
    yield r
    r.stop()


async def chat(s: aiohttp.ClientSession, url: str, key: str, model: str = "mock/echo",
               **extra: Any) -> tuple[int, Any]:
    async with s.post(f"{url}/v1/chat/completions", json=say("hello", model, **extra),
                      headers=auth(key)) as r:
        return r.status, await r.json()


async def test_rpm_held_across_three_processes(replicas: Replicas) -> None:
    urls = replicas.urls
    async with aiohttp.ClientSession() as s:
        results = await fire(15, lambda i: chat(s, urls[i % 3], SHARED))
    accepted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    logs = "\n".join(replicas.log(i)[-3000:] for i in range(3)) + repr(refused[:2])
    assert len(accepted) == 6, logs  # rpm 6 in total, not 3 x 6
    assert all(st == 429 and b["error"]["code"] == "rate_limit_exceeded" for st, b in refused)


async def _admin(s: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                 key: str = MASTER) -> tuple[int, Any]:
    async with s.request(method, url, json=body, headers=auth(key)) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else None)


async def test_dynamic_key_lifecycle_on_every_replica(replicas: Replicas,
                                                      redis3: RedisServer) -> None:
    urls = replicas.urls
    async with aiohttp.ClientSession() as s:
        status, created = await _admin(s, "POST", f"{urls[0]}/admin/keys",
                                       {"id": "dyn-1", "team": "d", "models": ["mock/*"],
                                        "limits": {"rpm": 100}})
        assert status == 201, created
        secret = created["key"]
        assert created["id"] == "dyn-1" and created["models"] == ["mock/*"]
        # the secret is shown once: never by GET, and Redis holds only its digest
        for url in urls:
            status, one = await _admin(s, "GET", f"{url}/admin/keys/dyn-1")
            assert status == 200 and "key" not in one and secret not in json.dumps(one)
            status, listed = await _admin(s, "GET", f"{url}/admin/keys")
            assert "dyn-1" in [k["id"] for k in listed["data"]]
            assert secret not in json.dumps(listed)
        dump = _redis_dump(redis3)
        assert secret not in dump and digest(secret) in dump
        # the new key works on every replica at once
        for url in urls:
            assert (await chat(s, url, secret))[0] == 200
        # PATCH on one replica: in force on all within one second
        status, patched = await _admin(s, "PATCH", f"{urls[1]}/admin/keys/dyn-1",
                                       {"models": ["other/*"]})
        assert status == 200 and patched["models"] == ["other/*"]
        for url in urls:
            await eventually(lambda u=url: _status_is(s, u, secret, 403), 1.5, f"PATCH on {url}")
            assert (await chat(s, url, secret, "other/x"))[0] == 200
        # DELETE on another: the key stops working everywhere within one second
        async with s.delete(f"{urls[2]}/admin/keys/dyn-1", headers=auth(MASTER)) as r:
            assert r.status == 204
        for url in urls:
            await eventually(lambda u=url: _status_is(s, u, secret, 401, "other/x"), 1.5,
                             f"DELETE on {url}")


async def _status_is(s: aiohttp.ClientSession, url: str, key: str, want: int,
                     model: str = "mock/echo") -> bool:
    return (await chat(s, url, key, model))[0] == want


def _redis_dump(server: RedisServer) -> str:
    """Every key name and every string/hash value in Redis, as text."""
    out = []
    for name in server.cli("--scan").splitlines():
        out.append(name)
        kind = server.cli("TYPE", name)
        if kind == "hash":
            out.append(server.cli("HGETALL", name))
        elif kind == "string":
            out.append(server.cli("GET", name))
        elif kind == "stream":
            out.append(server.cli("XRANGE", name, "-", "+"))
    return "\n".join(out)


async def test_admin_needs_the_master_key(replicas: Replicas) -> None:
    async with aiohttp.ClientSession() as s:
        for method, path, body in (("GET", "/admin/keys", None),
                                   ("POST", "/admin/keys", {"team": "x"}),
                                   ("PATCH", "/admin/keys/plain", {"team": "x"}),
                                   ("DELETE", "/admin/keys/shared", None),
                                   ("GET", "/admin/usage", None)):
            status, err = await _admin(s, method, replicas.urls[0] + path, body, key=OTHER)
            assert status == 403, (method, path)
            assert err["error"]["code"] == "master_key_required"
        status, _ = await _admin(s, "GET", replicas.urls[0] + "/admin/keys", key="sk-nope")
        assert status == 401


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=30)


async def test_cli_keys_create_list_revoke(replicas: Replicas) -> None:
    urls = replicas.urls
    common = ["--url", urls[0], "--master-key", MASTER]
    out = await cli("keys", "create", *common, "--id", "cli-1", "--team", "c",
                    "--models", "mock/*", "--rpm", "50")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["id"] == "cli-1" and created["limits"]["rpm"] == 50
    secret = created["key"]
    assert secret not in out.stderr
    async with aiohttp.ClientSession() as s:
        for url in urls:
            assert (await chat(s, url, secret))[0] == 200
        listed = await cli("keys", "list", "--url", urls[2], "--master-key", MASTER)
        assert listed.returncode == 0, listed.stderr
        line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("cli-1\t"))
        assert "team=c" in line and "active" in line and secret not in listed.stdout
        out = await cli("keys", "revoke", "--url", urls[1], "--master-key", MASTER,
                        "--id", "cli-1")
        assert out.returncode == 0 and "revoked cli-1" in out.stdout
        for url in urls:
            await eventually(lambda u=url: _status_is(s, u, secret, 401), 1.5, f"revoke on {url}")
    bad = await cli("keys", "list", "--url", urls[0], "--master-key", "sk-wrong")
    assert bad.returncode != 0 and "401" in bad.stderr and "sk-wrong" not in bad.stderr


async def test_cli_usage_reports_every_replica(replicas: Replicas) -> None:
    urls = replicas.urls
    async with aiohttp.ClientSession() as s:
        status, created = await _admin(s, "POST", f"{urls[0]}/admin/keys",
                                       {"id": "use-1", "team": "u"})
        key = created["key"]
        for i in range(6):
            assert (await chat(s, urls[i % 3], key, user=f"user-{i % 2}"))[0] == 200
        want: list[dict[str, Any]] = []

        async def all_six() -> bool:
            nonlocal want
            st, body = await _admin(s, "GET", f"{urls[1]}/admin/usage?key=use-1&group_by=key,user")
            want = body["data"]
            return sum(r["requests"] for r in want) == 6

        await eventually(all_six, 3.0, "six usage records")  # written off the response path
    assert [(r["user"], r["requests"]) for r in want] == [("user-0", 3), ("user-1", 3)]
    assert all(r["total_tokens"] > 0 and r["cost_usd"] > 0 for r in want)
    common = ["usage", "--url", urls[2], "--master-key", MASTER, "--key", "use-1",
              "--group-by", "key,user"]
    out = await cli(*common, "--format", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    rows = got["data"] if isinstance(got, dict) else got
    assert [(r["user"], r["requests"], r["total_tokens"]) for r in rows] == \
        [(r["user"], r["requests"], r["total_tokens"]) for r in want]
    out = await cli(*common, "--format", "csv")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["key", "user", "requests"]
    assert [ln.split(",")[:3] for ln in lines[1:]] == [["use-1", "user-0", "3"],
                                                        ["use-1", "user-1", "3"]]
    out = await cli(*common, "--format", "table")
    assert out.returncode == 0, out.stderr
    table = out.stdout
    assert "user-0" in table and "user-1" in table and "REQUESTS" in table.upper()
    assert str(want[0]["total_tokens"]) in table
