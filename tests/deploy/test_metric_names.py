"""The dashboard and the alerts query only metrics of the gateway's Contract (plus the
extras the gateway adds), and between them show every one of those families."""
from __future__ import annotations

from tests.deploy.metric_names import DASHBOARD_METRICS, dashboard_metrics, metrics_in_promql

COUNTERS = {"requests", "tokens", "cost_usd", "rate_limited", "retries", "fallbacks", "upstream_errors",
            "usage_records_dropped", "config_reloads", "redis_errors"}
HISTOGRAMS = {"request_duration_seconds", "time_to_first_token_seconds", "overhead_seconds",
              "redis_latency_seconds"}
GAUGES = {"inflight_requests", "provider_up", "redis_up", "quota_remaining_ratio"}

EXPORTED_SAMPLES = (
    {f"modelyard_{c}_total" for c in COUNTERS}
    | {f"modelyard_{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    | {f"modelyard_{g}" for g in GAUGES}
)


def family(sample: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if sample.endswith(suffix):
            return sample[len("modelyard_"):-len(suffix)]
    return sample[len("modelyard_"):]


def test_only_metrics_the_gateway_exports_are_queried() -> None:
    assert DASHBOARD_METRICS, "no metric found: the extraction is broken"
    unknown = DASHBOARD_METRICS - EXPORTED_SAMPLES
    assert not unknown, f"queried but not exported by the gateway: {sorted(unknown)}"


def test_every_exported_family_is_shown_or_alerted_on() -> None:
    shown = {family(s) for s in DASHBOARD_METRICS}
    assert shown == COUNTERS | HISTOGRAMS | GAUGES, (COUNTERS | HISTOGRAMS | GAUGES) - shown


def test_extraction_reads_expressions_not_strings_or_labels() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, model) (rate(modelyard_request_duration_seconds_bucket'
            '{model="modelyard_not_a_metric", provider=~"$provider"}[5m])))'
            ' / on(model) group_left modelyard_inflight_requests # modelyard_comment_total')
    assert metrics_in_promql(expr) == {"modelyard_request_duration_seconds_bucket", "modelyard_inflight_requests"}


def test_module_constant_is_the_parsed_set() -> None:
    assert DASHBOARD_METRICS == dashboard_metrics()
    assert "modelyard_requests_total" in DASHBOARD_METRICS
    assert "modelyard_time_to_first_token_seconds_bucket" in DASHBOARD_METRICS
