"""`Metrics.finished` (one call per finished request, children cached per label combination)
exports exactly what plain per-sample label lookups export: the same series, the same values,
and no series for what was not observed."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from gateway.metrics import (
    COST, DURATION, OVERHEAD, REQUESTS, TOKEN_KINDS, TOKENS, TTFT, HeldHistogram, Metrics,
)

FAMILIES = ("modelyard_requests", "modelyard_request_duration_seconds",
            "modelyard_time_to_first_token_seconds", "modelyard_overhead_seconds",
            "modelyard_tokens", "modelyard_cost_usd")

# model, provider, status, team, duration, overhead, ttft, (prompt, completion, cached, reasoning), usd
CASES: list[tuple[Any, ...]] = [
    ("{m}", "up1", 200, "alpha", 0.012, 0.0004, 0.011, (100, 20, 30, 0), 0.0021),
    ("{m}", "up1", 200, "alpha", 0.3, -0.0001, 0.29, (5, 1, 0, 1), 0.0),
    ("{m}", "up1", 200, "alpha", 7.0, None, None, (0, 0, 0, 0), 0.0),
    ("{m}", "none", 429, "other", 0.0005, None, None, (0, 0, 0, 0), 0.0),
    ("{m}", "up2", 502, "none", 1.5, 0.002, None, (0, 0, 3, 2), 0.5),  # no total: no tokens
    ("{m}", "up2", 200, "alpha", 0.05, 0.001, 0.02, (0, 9, 0, 0), 0.00009),
]


def samples(model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of our request families whose model label is `model` (label renamed)."""
    out = {}
    for family in REGISTRY.collect():
        if family.name not in FAMILIES:
            continue
        for s in family.samples:
            if s.labels.get("model") == model and not s.name.endswith("_created"):
                labels = tuple(sorted({**s.labels, "model": "M"}.items()))
                out[(s.name, labels)] = s.value
    return out


def old_path(m: Metrics, case: tuple[Any, ...], model: str) -> None:
    """The reference: each sample through the families' own `labels()`."""
    _, provider, status, team, duration, overhead, ttft, tokens, usd = case
    REQUESTS.labels(model, provider, str(status)).inc()
    if provider != "none":
        DURATION.labels(model, provider).observe(duration)
    if overhead is not None:
        OVERHEAD.labels(model).observe(max(overhead, 0.0))
    if ttft is not None:
        TTFT.labels(model, provider).observe(ttft)
    if tokens[0] + tokens[1]:
        for kind, n in zip(TOKEN_KINDS, tokens):
            if n:
                TOKENS.labels(model, provider, team, kind).inc(n)
        if usd:
            COST.labels(model, team).inc(usd)


@pytest.mark.parametrize("repeat", [1, 3])
def test_finished_exports_what_the_separate_calls_export(repeat: int) -> None:
    m = Metrics(["alpha"])
    old, new = f"old-{repeat}", f"new-{repeat}"
    for _ in range(repeat):
        for case in CASES:
            old_path(m, case, old)
            _, provider, status, team, duration, overhead, ttft, tokens, usd = case
            m.finished(new, provider, status, team, duration, overhead, ttft, tokens, usd)
    want, got = samples(old), samples(new)
    assert got == want
    assert got[("modelyard_requests_total", (("model", "M"), ("provider", "up1"),
                                             ("status", "200")))] == 3 * repeat
    kinds = {dict(k[1]).get("type") for k in got if k[0] == "modelyard_tokens_total"}
    assert kinds == {"prompt", "completion", "cached", "reasoning"}
    # nothing observed, nothing exported: no duration for provider "none", no tokens for up2/502
    assert not [k for k in got if dict(k[1]).get("provider") == "none"
                and "duration" in k[0]]
    assert not [k for k in got if k[0] == "modelyard_tokens_total"
                and dict(k[1])["provider"] == "up2" and dict(k[1])["type"] == "cached"]


async def test_samples_of_one_loop_iteration_are_added_together_when_it_ends() -> None:
    """Inside an event loop the samples are held until the iteration ends, then added per
    combination in one go: the same series and values (sums up to float rounding)."""
    m = Metrics(["alpha"])
    for case in CASES * 3:
        old_path(m, case, "old-loop")
        _, provider, status, team, duration, overhead, ttft, tokens, usd = case
        m.finished("new-loop", provider, status, team, duration, overhead, ttft, tokens, usd)
    key = ("modelyard_requests_total", (("model", "M"), ("provider", "up1"), ("status", "200")))
    assert samples("new-loop")[key] == 0  # held: nothing added yet
    await asyncio.sleep(0)
    want, got = samples("old-loop"), samples("new-loop")
    assert got == pytest.approx(want, rel=1e-12) and got.keys() == want.keys()
    assert got[key] == 9
    buckets = {k: v for k, v in got.items() if k[0].endswith("_bucket")}
    assert buckets == {k: want[k] for k in buckets}  # counts are exact
    # the next iteration's samples are added again
    m.finished("new-loop", "up1", 200, "alpha", 0.012, None, None, (1, 1, 0, 0), 0.0)
    await asyncio.sleep(0)
    assert samples("new-loop")[key] == 10


async def test_held_histogram_adds_an_iterations_samples_when_it_ends() -> None:
    registry = CollectorRegistry()
    held_h = Histogram("held_h", "held", buckets=(0.001, 0.01, 0.1), registry=registry)
    plain_h = Histogram("plain_h", "plain", buckets=(0.001, 0.01, 0.1), registry=registry)
    held = HeldHistogram(held_h)
    values = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.5, 3.0, 0.0001]
    for v in values:
        held.observe(v)
        plain_h.observe(v)

    def series(name: str) -> dict[str, float]:
        return {f"{s.name.removeprefix(name)}{s.labels}": s.value
                for family in registry.collect() for s in family.samples
                if s.name.startswith(name) and not s.name.endswith("_created")}
    assert series("held_h")["_count{}"] == 0  # held until the iteration ends
    await asyncio.sleep(0)
    assert series("held_h") == pytest.approx(series("plain_h"), rel=1e-12)
    assert series("held_h")["_bucket{'le': '0.001'}"] == 3
    held.observe(0.02)
    await asyncio.sleep(0)
    assert series("held_h")["_count{}"] == 9
