"""Fixtures: a fault-injecting fake upstream and a gateway (create_app) in front of it."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest
import yaml

from gateway.app import create_app
from gateway.config.loader import parse_config
from tests.resilience.fake_upstream import FakeUpstream

MASTER = "sk-resilience-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
Gateway = Callable[..., Awaitable[Any]]


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeUpstream:
    f = FakeUpstream()
    server = await aiohttp_server(f.app)
    f.base = str(server.make_url("")).rstrip("/")
    return f


def gateway_config(fake: FakeUpstream, routes: dict[str, Any], *,
                   providers: tuple[str, ...] = ("p1", "p2", "p3"),
                   provider_extra: dict[str, dict[str, Any]] | None = None,
                   retries: dict[str, Any] | None = None, timeouts: dict[str, Any] | None = None,
                   cooldown: dict[str, Any] | None = None,
                   keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    provs = {}
    for name in providers:
        base = f"{fake.base}/{name}/v1"
        provs[name] = {"adapter": "openai", "base_url": base,
                       "api_key": f"sk-upstream-{name}", **(provider_extra or {}).get(name, {})}
    return {
        "auth": {"master_key": MASTER, "keys": keys or []},
        "providers": provs,
        "routes": routes,
        "retries": retries or {"attempts": 3, "backoff_s": 0.01, "backoff_max_s": 0.05},
        "timeouts": timeouts or {"connect_s": 1, "first_token_s": 2, "total_s": 5, "idle_s": 1},
        "cooldown": cooldown or {"failures": 100, "window_s": 60, "cooldown_s": 30},
        "usage": {"jsonl_path": ""},
        "logging": {"access_log": False},
    }


@pytest.fixture
def gateway(aiohttp_client: Any) -> Gateway:
    async def make(cfg: dict[str, Any]) -> Any:
        app = create_app(parse_config(yaml.safe_dump(cfg), env={}))
        return await aiohttp_client(app)
    return make


def chat(model: str = "m", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "stream": stream, **extra}


class Result:
    def __init__(self, status: int, body: Any, headers: Any, elapsed: float, text: str) -> None:
        self.status, self.body, self.headers, self.elapsed, self.text = \
            status, body, headers, elapsed, text

    @property
    def error(self) -> dict[str, Any]:
        return self.body["error"]  # type: ignore[no-any-return]


async def post(client: Any, body: dict[str, Any], headers: dict[str, str] | None = None,
               path: str = "/v1/chat/completions") -> Result:
    import time

    from gateway.types import loads

    t0 = time.monotonic()
    resp = await client.post(path, json=body, headers=headers or AUTH)
    text = await resp.text()
    elapsed = time.monotonic() - t0
    parsed: Any = None
    if not body.get("stream") or resp.status != 200:
        parsed = loads(text) if text else None
    return Result(resp.status, parsed, resp.headers, elapsed, text)


def frames(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def resources(client: Any) -> Any:
    from gateway.http.keys import RESOURCES

    return client.server.app[RESOURCES]


def route(*targets: str, **extra: Any) -> dict[str, Any]:
    """A route of targets `provider` or `provider:weight`, on upstream model `up-<provider>`."""
    out = []
    for t in targets:
        name, _, weight = t.partition(":")
        out.append({"provider": name, "model": f"up-{name}", "weight": float(weight or 1)})
    return {"targets": out, **extra}
