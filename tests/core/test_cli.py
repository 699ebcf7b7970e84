"""`python -m gateway check-config | serve | mock-provider` as real subprocesses."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import yaml
from openai import AsyncOpenAI

from tests.core.support import base_config
from tests.core.test_config import BAD, EXPECTED

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "gateway.yaml"
START_S = 20.0  # bound for a subprocess to come up


def clean_env() -> dict[str, str]:
    """No provider keys, no Modelyard settings: a fresh machine."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ} | {"PYTHONUNBUFFERED": "1"}


def run(*args: str) -> tuple[int, str, str]:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- check-config


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(base_config("http://127.0.0.1:9/v1")))
    code, out, err = run("check-config", str(path))
    assert code == 0, err
    assert out.strip() == f"{path}: ok (2 providers, 5 routes)"


def test_check_config_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, out, err = run("check-config", str(path))
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0] == f"invalid config {path}:"
    assert sorted(lines[1:]) == sorted(f"  - {p}" for p in EXPECTED)


def test_check_config_missing_file() -> None:
    code, _, err = run("check-config", "does/not/exist.yaml")
    assert code == 1 and "cannot read" in err


def test_check_config_of_the_shipped_config_with_no_env() -> None:
    code, out, err = run("check-config", str(SHIPPED))
    assert code == 0, err
    assert out.startswith(f"{SHIPPED}: ok")


def test_serve_refuses_workers_without_redis() -> None:
    code, _, err = run("serve", "--config", str(SHIPPED), "--workers", "2", "--port", "0")
    assert code == 2
    assert "state.redis_url" in err


# ----------------------------------------------------------------------------- serve


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=ROOT, env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


async def wait_for_line(proc: asyncio.subprocess.Process, needle: bytes) -> list[bytes]:
    """Read stderr until a line contains `needle` (the process says it is ready)."""
    assert proc.stderr is not None
    seen: list[bytes] = []
    async with asyncio.timeout(START_S):
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise AssertionError(f"process exited before {needle!r}: {b''.join(seen)!r}")
            seen.append(line)
            if needle in line:
                return seen


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    proc = await start("serve", "--config", str(SHIPPED), "--port", str(port))
    try:
        await wait_for_line(proc, b"modelyard ready")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        await stop(proc)


async def test_serve_subprocess(served: tuple[str, Any]) -> None:
    url, proc = served
    demo = {"Authorization": "Bearer sk-modelyard-demo"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ok"}
        async with http.get(f"{url}/readyz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ready"}
        async with http.post(f"{url}/v1/chat/completions", headers=demo, json={
                "model": "mock/echo", "messages": [{"role": "user", "content": "hi gateway"}]}) as resp:
            assert resp.status == 200
            assert resp.headers["x-modelyard-provider"] == "local"
            body = await resp.json()
        async with http.post(f"{url}/v1/chat/completions", json={"model": "mock/echo"}) as resp:
            assert resp.status == 401
    assert body["model"] == "mock/echo"
    assert body["choices"][0]["message"]["content"] == "hi gateway"
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-modelyard-demo",
                           max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "a b c"}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "a b c"
    assert await stop(proc) == 0  # SIGTERM: drain and exit 0


# ----------------------------------------------------------------------------- mock-provider


async def wait_for_port(port: int, proc: asyncio.subprocess.Process) -> None:
    """The mock server prints nothing when it is up: poll its port (bounded)."""
    async with asyncio.timeout(START_S):
        while True:
            if proc.returncode is not None:
                raise AssertionError("mock-provider exited")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def test_mock_provider_subprocess_speaks_openai() -> None:
    port = free_port()
    proc = await start("mock-provider", "--flavor", "openai", "--port", str(port))
    try:
        await wait_for_port(port, proc)
        async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-anything",
                               max_retries=0) as client:
            result = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "mock me"}])
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x y"}], stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            models = [m.id async for m in client.models.list()]
    finally:
        await stop(proc)
    assert result.object == "chat.completion" and result.model == "gpt-4o"
    assert result.choices[0].message.content == "mock me"
    assert result.usage is not None and result.usage.completion_tokens == 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "x y"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert "gpt-4o" in models
