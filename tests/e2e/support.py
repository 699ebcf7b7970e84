"""Shared pieces of the end-to-end tests: keys, config builders, a usage-reporting fake upstream,
concurrent fire and polling helpers.

The fake upstream (tests/fakes.py `FakeOpenAI`) answers from the request: a user message
`usage P C` makes it report `prompt_tokens=P, completion_tokens=C` (plain JSON, or an SSE stream
whose usage chunk is sent only when the gateway asked for it with `stream_options`).
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from typing import Any, Awaitable, Callable, TypeVar

import yaml

from gateway.config import GatewayConfig, parse_config
from tests.fakes import Recorded, Reply, Stream, completion, text_stream

MASTER = "sk-e2e-master-6a1f0c"
KEY_LIM = "sk-e2e-limited-91b2d3"  # rpm 5
KEY_T1 = "sk-e2e-team1-44aa10"  # team t (team rpm 4)
KEY_T2 = "sk-e2e-team2-55bb20"  # team t
KEY_FREE = "sk-e2e-free-7c7c7c"  # no limits at all
KEY_QUOTA = "sk-e2e-quota-3e3e3e"  # quota {tokens: 100, period: day}
KEY_Q1 = "sk-e2e-qteam1-1f1f1f"  # team q (team quota)
KEY_Q2 = "sk-e2e-qteam2-2f2f2f"  # team q
KEY_TPM = "sk-e2e-tpm-8d8d8d"  # tpm 1000
PROVIDER_KEY = "sk-e2e-upstream-0d0d0d"
PRICE = {"input": 2.0, "output": 8.0}  # USD per million tokens

T = TypeVar("T")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def say(text: str, model: str = "priced/m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def config(base_url: str, redis_url: str = "", **changes: Any) -> dict[str, Any]:
    """A routing table over one fake OpenAI upstream (`up`), plus the in-process `mock`."""
    data: dict[str, Any] = {
        "server": {"max_body_mb": 1, "shutdown_grace_s": 2},
        "state": {"redis_url": redis_url, "on_redis_error": "open", "redis_budget_ms": 200},
        "auth": {"master_key": MASTER, "keys": [
            {"id": "limited", "key": KEY_LIM, "team": "solo", "limits": {"rpm": 5}},
            {"id": "t1", "key": KEY_T1, "team": "t"},
            {"id": "t2", "key": KEY_T2, "team": "t"},
            {"id": "free", "key": KEY_FREE, "team": "free"},
            {"id": "quota", "key": KEY_QUOTA, "team": "solo",
             "quota": {"tokens": 100, "period": "day"}},
            {"id": "q1", "key": KEY_Q1, "team": "q"},
            {"id": "q2", "key": KEY_Q2, "team": "q"},
            {"id": "tpm", "key": KEY_TPM, "team": "solo", "limits": {"tpm": 1000}},
        ]},
        "teams": {"t": {"limits": {"rpm": 4}},
                  "q": {"quota": {"tokens": 120, "period": "day"}}},
        "providers": {
            "up": {"adapter": "openai", "base_url": base_url, "api_key": PROVIDER_KEY},
            "up2": {"adapter": "openai", "base_url": base_url, "api_key": PROVIDER_KEY},
            "local": {"adapter": "mock"},
        },
        "routes": {
            "priced/m": {"targets": [{"provider": "up", "model": "m-up"}], "price": PRICE},
            "free/m": {"targets": [{"provider": "up", "model": "free-up"}]},
            "capped/m": {"targets": [{"provider": "up", "model": "capped-up"}],
                         "limits": {"rpm": 3}, "price": PRICE},
            "flaky/m": {"targets": [{"provider": "up", "model": "flaky-up"}],
                        "fallbacks": ["backup/m"], "price": PRICE},
            "backup/m": {"targets": [{"provider": "up2", "model": "backup-up"}],
                         "price": {"input": 1.0, "output": 2.0}},
            "mock/*": {"targets": [{"provider": "local"}], "models": ["mock/echo"]},
        },
        "default_model": "priced/m",
        "retries": {"attempts": 2, "backoff_s": 0, "backoff_max_s": 0},
        "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 10, "idle_s": 5},
        "cooldown": {"failures": 1000, "window_s": 60, "cooldown_s": 1},
    }
    out = copy.deepcopy(data)
    out.update(changes)
    return out


def build(data: dict[str, Any]) -> GatewayConfig:
    return parse_config(yaml.safe_dump(data, sort_keys=False), env={})


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ----------------------------------------------------------------------------- the fake upstream


def asked_usage(rec: Recorded) -> tuple[int, int]:
    """`usage P C` in the last user message → (P, C); anything else → (19, 10)."""
    body = rec.json if isinstance(rec.json, dict) else {}
    text = ""
    for m in body.get("messages") or []:
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            text = m["content"]
    words = text.split()
    if len(words) >= 3 and words[0] == "usage":
        return int(words[1]), int(words[2])
    return 19, 10


def usage_answer(rec: Recorded) -> Reply | Stream:
    """Answer with the usage the request asked for; streams carry it only when asked upstream."""
    body = rec.json if isinstance(rec.json, dict) else {}
    p, c = asked_usage(rec)
    model = body.get("model") or "m"
    if body.get("stream"):
        wants = bool((body.get("stream_options") or {}).get("include_usage"))
        return Stream(text_stream(["Hel", "lo"], model=model, usage=(p, c) if wants else None))
    return Reply(200, completion("Hello", model=model, usage=(p, c), created=int(time.time())))


# ----------------------------------------------------------------------------- helpers


async def fire(n: int, make: Callable[[int], Awaitable[T]]) -> list[T]:
    """Start `n` calls at once (each waits on one gate, released after all were created)."""
    gate = asyncio.Event()

    async def one(i: int) -> T:
        await gate.wait()
        return await make(i)

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    await asyncio.sleep(0)  # every task reaches the gate
    gate.set()
    return list(await asyncio.gather(*tasks))


async def eventually(check: Callable[[], Awaitable[bool]], deadline_s: float = 1.5,
                     what: str = "condition") -> float:
    """Poll `check` until it holds; fail after `deadline_s`. Returns the time it took."""
    t0 = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline_s:
            raise AssertionError(f"{what} did not hold within {deadline_s}s")
        await asyncio.sleep(0.02)

