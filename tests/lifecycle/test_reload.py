"""SIGHUP reloads on a real gateway process: a valid config swaps in without dropping streams,
an invalid one is refused with a log line and a metric while the old one keeps serving."""
from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Callable

import aiohttp

from tests.lifecycle import fake_upstream
from tests.lifecycle.support import (
    AUTH, KEY, Gateway, StreamReader, free_port, metric_value, write_yaml,
)

RELOADS = "modelyard_config_reloads_total"


def upstream_config(port: int, base: str, account: str, route: str = "m1",
                    aliases: dict[str, str] | None = None) -> dict[str, Any]:
    routes: dict[str, Any] = {route: {"targets": [{"provider": "up", "model": "m1"}]}}
    routes.update({a: {"alias": t} for a, t in (aliases or {}).items()})
    return {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace_s": 1},
        "auth": {"keys": [{"id": "life", "key": KEY, "team": "life"}]},
        "providers": {"up": {"adapter": "openai", "base_url": f"{base}/{account}/v1",
                             "api_key": "sk-fake-upstream-key"}},
        "routes": routes,
        "default_model": route,
        "retries": {"attempts": 1},
    }


async def answer(session: aiohttp.ClientSession, url: str, model: str) -> tuple[int, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/v1/chat/completions", json=body, headers=AUTH) as r:
        data = await r.json()
        if r.status != 200:
            return r.status, data["error"]["message"]
        return 200, data["choices"][0]["message"]["content"]


async def test_sighup_valid_config_swaps_routes_and_keeps_inflight_stream(
        spawn: Callable[..., Gateway], aiohttp_server: Any) -> None:
    up = await aiohttp_server(fake_upstream.create_app(chunks=12, delay_s=0.25))
    base, port = f"http://127.0.0.1:{up.port}", free_port()
    gw = spawn(upstream_config(port, base, "alpha"), port)
    await gw.wait_ready()
    async with aiohttp.ClientSession() as session:
        assert await answer(session, gw.url, "m1") == (200, "alpha")
        assert (await answer(session, gw.url, "fast"))[0] == 404
        assert await metric_value(session, gw.url, RELOADS, 'result="ok"') == 0

        stream = StreamReader(session, gw.url, "m1", "count")
        await asyncio.wait_for(stream.first.wait(), 5)
        # The provider's base URL changes: its upstream session is retired, yet the stream that
        # runs on it must finish, also well past shutdown_grace_s (1 s).
        write_yaml(gw.config, upstream_config(port, base, "bravo", aliases={"fast": "m1"}))
        gw.signal(signal.SIGHUP)
        await gw.wait_log(lambda r: r["msg"] == "config reloaded", 5)
        reloaded_at = time.perf_counter()
        assert await answer(session, gw.url, "fast") == (200, "bravo")
        assert await answer(session, gw.url, "m1") == (200, "bravo")
        assert not stream.task.done()

        await asyncio.wait_for(stream.task, 10)
        assert stream.error is None and stream.done, stream.frames[-2:]
        assert "".join(stream.contents()).split() == [f"alpha-{i}" for i in range(12)]
        assert stream.ended_at - reloaded_at > 1.5, "the stream outlived the grace period"
        assert await metric_value(session, gw.url, RELOADS, 'result="ok"') == 1
        assert await metric_value(session, gw.url, RELOADS, 'result="error"') == 0
    assert "sk-fake-upstream-key" not in gw.log_text()


async def test_sighup_invalid_config_is_refused_and_old_one_keeps_serving(
        spawn: Callable[..., Gateway], aiohttp_server: Any) -> None:
    up = await aiohttp_server(fake_upstream.create_app())
    base, port = f"http://127.0.0.1:{up.port}", free_port()
    good = upstream_config(port, base, "alpha")
    gw = spawn(good, port)
    await gw.wait_ready()
    bad = upstream_config(port, base, "bravo", aliases={"fast": "m1"})
    bad["routes"]["m1"]["targets"][0]["provider"] = "nope"
    async with aiohttp.ClientSession() as session:
        for n, text in enumerate((None, "routes: [\n  unclosed"), start=1):
            if text is None:
                write_yaml(gw.config, bad)
            else:
                gw.config.write_text(text)
            gw.signal(signal.SIGHUP)
            line = await gw.wait_log(lambda r: r["msg"].startswith("config reload refused"), 5,
                                     count=n)
            if n == 1:
                assert line["level"] == "error"
                assert "unknown provider 'nope'" in line["msg"], line
            else:
                assert "YAML" in line["msg"], line
            assert await metric_value(session, gw.url, RELOADS, 'result="error"') == n
            assert await answer(session, gw.url, "m1") == (200, "alpha")
            assert (await answer(session, gw.url, "fast"))[0] == 404
        assert await metric_value(session, gw.url, RELOADS, 'result="ok"') == 0
        assert (await session.get(gw.url + "/readyz")).status == 200
