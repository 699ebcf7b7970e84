"""Every series the Grafana dashboard and the alert rules query is exported (issue 7, item 1/4),
with Redis configured, a team quota, a reload, and traffic touching every family."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.config import load_config
from gateway.http.keys import STATE
from tests.deploy.metric_names import DASHBOARD_METRICS
from tests.fakes import FakeOpenAI, Reply, completion, error_body
from tests.observability.support import (KEY_ALPHA, KEY_SLOW, auth, chat, config, parse,
                                         value, write_config)


async def test_dashboard_metrics_exported(aiohttp_client: Any, redis_url: str, tmp_path: Path,
                                          fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    one, two = fakes
    path = write_config(tmp_path / "gateway.yaml",
                        config(one.base_url, two.base_url, redis_url=redis_url))
    app = create_app(load_config(path), path)
    client = await aiohttp_client(app)
    fail = Reply(500, error_body("upstream broke", "server_error"))
    one.push(fail, fail)  # chat/main: retry, then the fallback answers
    two.push(Reply(200, completion("d", usage=(7, 3))))
    r = await client.post("/v1/chat/completions", json=chat("chat/main"), headers=auth(KEY_ALPHA))
    assert r.status == 200 and r.headers["x-modelyard-fallback"] == "chat/backup"
    body = chat("chat/main", stream=True, stream_options={"include_usage": True})
    r = await client.post("/v1/chat/completions", json=body, headers=auth(KEY_ALPHA))
    assert r.status == 200
    await r.read()
    for status in (200, 429):  # rpm 1, checked in Redis
        r = await client.post("/v1/chat/completions", json=chat("chat/main"),
                              headers=auth(KEY_SLOW))
        assert r.status == status
    assert app[STATE].reload() is True
    text = await (await client.get("/metrics")).text()
    samples = parse(text)
    names = {name for name, _ in samples}
    assert DASHBOARD_METRICS - names == set()
    assert value(samples, "modelyard_redis_up") == 1
    assert value(samples, "modelyard_config_reloads_total", result="ok") >= 1
    assert value(samples, "modelyard_provider_up", provider="up1") == 1
    ratio = [v for (n, _), v in samples.items() if n == "modelyard_quota_remaining_ratio"]
    assert ratio and all(0 < v <= 1 for v in ratio)


async def test_team_added_by_reload_gets_its_label(aiohttp_client: Any, tmp_path: Path,
                                                   fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    one, two = fakes
    cfg = config(one.base_url, two.base_url)
    path = write_config(tmp_path / "gateway.yaml", cfg)
    app = create_app(load_config(path), path)
    client = await aiohttp_client(app)
    cfg["teams"]["gamma"] = {}
    cfg["auth"]["keys"].append({"id": "key-gamma-1", "key": "sk-gamma-obs-77d1", "team": "gamma"})
    write_config(path, cfg)
    assert app[STATE].reload() is True
    r = await client.post("/v1/chat/completions", json=chat("chat/main"),
                          headers=auth("sk-gamma-obs-77d1"))
    assert r.status == 200
    samples = parse(await (await client.get("/metrics")).text())
    assert value(samples, "modelyard_tokens_total", model="chat/main", provider="up1",
                 team="gamma", type="prompt") == 19
