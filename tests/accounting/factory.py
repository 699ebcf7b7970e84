"""Deterministic usage records and a naive reference aggregation for the accounting tests."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any, Iterable

from gateway.accounting.cost import Price, cost_usd
from gateway.accounting.record import UsageRecord

PRICES = {
    "openai/gpt-4o": Price(2.50, 10.00, 1.25),
    "anthropic/claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
    # "lunaby/lunaby-pro" has no price on purpose
}
KEYS = {"k-search": "search", "k-ads": "ads", "k-ads2": "ads"}
MODELS = {"openai/gpt-4o": ["openai", "azure-eu"], "anthropic/claude-sonnet-4-5": ["anthropic"],
          "lunaby/lunaby-pro": ["lunaby"]}
USERS = ["", "alice", "bob"]
DAYS = [datetime(2025, 3, d, tzinfo=timezone.utc) for d in (1, 2, 3)]


def make_record(i: int, *, key: str = "k-search", team: str = "search",
                model: str = "openai/gpt-4o", provider: str = "openai", user: str = "",
                ts: float | None = None, prompt: int = 100, completion: int = 20, cached: int = 0,
                status: int = 200) -> UsageRecord:
    usd, priced = cost_usd(PRICES.get(model), prompt, completion, cached)
    return UsageRecord(
        request_id=f"req-{i}", ts=DAYS[0].timestamp() + 3600 if ts is None else ts, key_id=key,
        team=team, user=user, model=model, provider=provider, upstream_model=model.split("/")[-1],
        attempts=1, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
        reasoning_tokens=completion // 4, cost_usd=usd, priced=priced, status=status,
        error_type="" if status < 400 else "upstream_error", latency_ms=12.5)


def random_records(n: int, seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = rng.choice(sorted(KEYS))
        model = rng.choice(sorted(MODELS))
        day = rng.choice(DAYS)
        # include both edges of each day
        offset = rng.choice([0, 1, 3600 * 12.5, 86_399.5])
        prompt = rng.randint(0, 5000)
        out.append(make_record(
            i, key=key, team=KEYS[key], model=model, provider=rng.choice(MODELS[model]),
            user=rng.choice(USERS), ts=day.timestamp() + offset, prompt=prompt,
            completion=rng.randint(0, 800), cached=rng.randint(0, prompt),
            status=rng.choice([200, 200, 200, 429, 502])))
    return out


def _dim(r: UsageRecord, name: str) -> str:
    if name == "day":
        return datetime.fromtimestamp(r.ts, timezone.utc).date().isoformat()
    return {"key": r.key_id, "team": r.team, "model": r.model, "provider": r.provider,
            "user": r.user}[name]


def expected(records: Iterable[UsageRecord], group_by: list[str],
             **filters: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """Naive reference: group the raw records in Python."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in records:
        if any(_dim(r, d) != v for d, v in filters.items()):
            continue
        row = out.setdefault(tuple(_dim(r, g) for g in group_by),
                             {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                              "cost_usd": 0.0})
        row["requests"] += 1
        row["prompt_tokens"] += r.prompt_tokens
        row["completion_tokens"] += r.completion_tokens
        row["cost_usd"] += r.cost_usd
    return out
