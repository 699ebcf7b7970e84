"""`Metrics.finished` (one call per finished request, children cached per label combination)
exports exactly what `request_done` + `ttft` + `tokens` export: the same series, the same values,
and no series for what was not observed."""
from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.metrics import Metrics

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
    _, provider, status, team, duration, overhead, ttft, tokens, usd = case
    m.request_done(model, provider, status, duration, overhead)
    if ttft is not None:
        m.ttft(model, provider, ttft)
    if tokens[0] + tokens[1]:
        m.tokens(model, provider, team, *tokens, usd)


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
