"""Writes deploy/grafana/dashboards/modelyard.json, the Modelyard Grafana dashboard.

The JSON is committed; this script is its source. After editing, run
`.venv/bin/python deploy/grafana/build_dashboard.py` (tests/deploy checks the two agree).
Every query uses only metrics the gateway exports (prefix `modelyard_`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE_UID = "modelyard-prometheus"  # provisioned in provisioning/datasources/prometheus.yaml
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
DASHBOARD_UID = "modelyard-overview"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "modelyard.json"

# Template-variable filters, applied to every series that has the label.
M = 'model=~"$model"'
P = 'provider=~"$provider"'
T = 'team=~"$team"'
RI = "$__rate_interval"
MP = f"{M}, {P}"
MP5 = f'{M}, {P}, status=~"5.."'


@dataclass
class Panel:
    """One panel: title, kind (timeseries|stat|bargauge|state-timeline), unit, queries (expr, legend)."""

    title: str
    kind: str
    unit: str
    queries: list[tuple[str, str]]
    description: str = ""
    width: int = 12
    height: int = 8
    stack: bool = False
    instant: bool = False
    thresholds: list[tuple[str, float | None]] = field(default_factory=list)


def quantile(q: float, metric: str, by: str, selector: str) -> str:
    labels = f"le, {by}" if by else "le"
    matchers = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{matchers}[{RI}])))"


def rate_sum(metric: str, by: str, selector: str) -> str:
    group = f" by ({by})" if by else ""
    matchers = f"{{{selector}}}" if selector else ""
    return f"sum{group} (rate({metric}{matchers}[{RI}]))"


REQ = "modelyard_requests_total"
DURATION = "modelyard_request_duration_seconds"
TTFT = "modelyard_time_to_first_token_seconds"


def percentiles(qs: tuple[float, ...], metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    return [(quantile(q, metric, by, selector), f"p{int(q * 100)} {{{{{by}}}}}") for q in qs]


def overview() -> list[Panel]:
    small = {"width": 4, "height": 4}
    return [
        Panel("Requests / s", "stat", "reqps", [(rate_sum(REQ, "", MP), "")], **small),
        Panel("Error ratio (5xx)", "stat", "percentunit",
              [(f"{rate_sum(REQ, '', MP5)} / {rate_sum(REQ, '', MP)}", "")],
              thresholds=[("green", None), ("orange", 0.01), ("red", 0.05)], **small),
        Panel("p95 latency", "stat", "s", [(quantile(0.95, DURATION, "", MP), "")], **small),
        Panel("In flight", "stat", "short", [(f"sum (modelyard_inflight_requests{{{M}}})", "")], **small),
        Panel("Providers up", "stat", "short",
              [(f"count (max by (provider) (modelyard_provider_up{{{P}}}) == 1)", "")], **small),
        Panel("Cost / hour", "stat", "currencyUSD",
              [(f"sum (rate(modelyard_cost_usd_total{{{M}, {T}}}[{RI}])) * 3600", "")], **small),
    ]


def traffic() -> list[Panel]:
    return [
        Panel("Requests / s by model", "timeseries", "reqps", [(rate_sum(REQ, "model", MP), "{{model}}")], stack=True),
        Panel("Requests / s by provider", "timeseries", "reqps", [(rate_sum(REQ, "provider", MP), "{{provider}}")],
              stack=True, description='provider="none": refused before any upstream (401, 403, 404, 429).'),
        Panel("Responses / s by status", "timeseries", "reqps", [(rate_sum(REQ, "status", MP), "{{status}}")],
              stack=True),
        Panel("Error ratio (5xx) by provider", "timeseries", "percentunit",
              [(f"{rate_sum(REQ, 'provider', MP5)} / {rate_sum(REQ, 'provider', MP)}", "{{provider}}")]),
        Panel("Upstream errors / s by provider and status", "timeseries", "reqps",
              [(rate_sum("modelyard_upstream_errors_total", "provider, status", P), "{{provider}} {{status}}")],
              description="Every failed upstream attempt, retried ones included."),
        Panel("Provider in rotation", "state-timeline", "short",
              [(f"max by (provider) (modelyard_provider_up{{{P}}})", "{{provider}}")],
              thresholds=[("red", None), ("green", 1)]),
    ]


def latency() -> list[Panel]:
    return [
        Panel("Request latency p50 / p95 / p99 by model", "timeseries", "s",
              percentiles((0.5, 0.95, 0.99), DURATION, "model", MP)),
        Panel("Request latency p95 by provider", "timeseries", "s", percentiles((0.95,), DURATION, "provider", MP)),
        Panel("Time to first token p50 / p95 by model", "timeseries", "s",
              percentiles((0.5, 0.95), TTFT, "model", MP)),
        Panel("Time to first token p95 by provider", "timeseries", "s", percentiles((0.95,), TTFT, "provider", MP)),
        Panel("Gateway overhead p50 / p99 by model", "timeseries", "s",
              percentiles((0.5, 0.99), "modelyard_overhead_seconds", "model", M),
              description="Time spent in Modelyard itself (auth, limits, routing, encoding), upstream excluded."),
        Panel("In-flight requests by model", "timeseries", "short",
              [(f"sum by (model) (modelyard_inflight_requests{{{M}}})", "{{model}}")], stack=True),
    ]


def tokens_and_cost() -> list[Panel]:
    mpt, mt = f"{M}, {P}, {T}", f"{M}, {T}"
    return [
        Panel("Tokens / s by team and type", "timeseries", "short",
              [(rate_sum("modelyard_tokens_total", "team, type", mpt), "{{team}} {{type}}")], stack=True),
        Panel("Tokens / s by model", "timeseries", "short",
              [(rate_sum("modelyard_tokens_total", "model", mpt), "{{model}}")], stack=True),
        Panel("Cost USD / hour by team", "timeseries", "currencyUSD",
              [(f"sum by (team) (rate(modelyard_cost_usd_total{{{mt}}}[{RI}])) * 3600", "{{team}}")], stack=True),
        Panel("Cost USD over the time range by team and model", "bargauge", "currencyUSD",
              [(f"sort_desc(sum by (team, model) (increase(modelyard_cost_usd_total{{{mt}}}[$__range])))",
                "{{team}} {{model}}")], instant=True, description="Spend over the selected time range."),
        Panel("Quota remaining by team", "timeseries", "percentunit",
              [(f"min by (team) (modelyard_quota_remaining_ratio{{{T}}})", "{{team}}")], width=24,
              description="Only teams with a quota. At 0 the team gets 429 insufficient_quota.",
              thresholds=[("red", None), ("orange", 0.1), ("green", 0.25)]),
    ]


def limits() -> list[Panel]:
    return [
        Panel("Rate limited / s by team and scope", "timeseries", "reqps",
              [(rate_sum("modelyard_rate_limited_total", "team, scope", T), "{{team}} {{scope}}")],
              width=8, stack=True),
        Panel("Retries / s by provider and reason", "timeseries", "reqps",
              [(rate_sum("modelyard_retries_total", "provider, reason", P), "{{provider}} {{reason}}")],
              width=8, stack=True),
        Panel("Fallbacks / s", "timeseries", "reqps",
              [(rate_sum("modelyard_fallbacks_total", "from_model, to_model", ""), "{{from_model}} → {{to_model}}")],
              width=8, stack=True),
    ]


def internals() -> list[Panel]:
    return [
        Panel("Redis reachable", "state-timeline", "short",
              [("min by (instance) (modelyard_redis_up)", "{{instance}}")],
              width=6, thresholds=[("red", None), ("green", 1)]),
        Panel("Redis latency p99", "timeseries", "s",
              percentiles((0.99,), "modelyard_redis_latency_seconds", "instance", ""), width=6),
        Panel("Redis errors / s", "timeseries", "short",
              [(rate_sum("modelyard_redis_errors_total", "instance", ""), "{{instance}}")], width=6),
        Panel("Usage records dropped and config reloads", "timeseries", "short", [
            (f"sum (increase(modelyard_usage_records_dropped_total[{RI}]))", "usage records dropped"),
            (f"sum by (result) (increase(modelyard_config_reloads_total[{RI}]))", "config reload {{result}}")],
            width=6),
    ]


def rows() -> list[tuple[str, list[Panel]]]:
    return [("Overview", overview()), ("Traffic and errors", traffic()), ("Latency", latency()),
            ("Tokens and cost", tokens_and_cost()), ("Limits, retries and fallbacks", limits()),
            ("Gateway internals", internals())]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr,
         "legendFormat": legend or "__auto", "range": not panel.instant, "instant": panel.instant}
        for i, (expr, legend) in enumerate(panel.queries)
    ]
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": color, "value": value} for color, value in panel.thresholds]}
        defaults["color"] = {"mode": "thresholds"}
    if panel.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if panel.stack else 0,
                              "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"}}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                               "tooltip": {"mode": "multi", "sort": "desc"}}
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    elif panel.kind == "bargauge":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True}
    return {"id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
            "datasource": DATASOURCE, "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options, "targets": targets}


def layout() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for title, row_panels in rows():
        panels.append({"id": next_id, "type": "row", "title": title, "collapsed": False,
                       "datasource": DATASOURCE, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id, y, x, row_h = next_id + 1, y + 1, 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(panel_json(panel, next_id, x, y))
            next_id, x, row_h = next_id + 1, x + panel.width, max(row_h, panel.height)
        y += row_h
    return panels


def variable(name: str, label: str, metric: str) -> dict[str, Any]:
    query = f"label_values({metric}, {name})"
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


def dashboard() -> dict[str, Any]:
    return {
        "uid": DASHBOARD_UID, "title": "Modelyard gateway", "tags": ["modelyard", "llm"],
        "description": "Traffic, errors, latency, tokens and cost of the Modelyard LLM gateway.",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "utc",
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            variable("model", "Model", "modelyard_requests_total"),
            variable("provider", "Provider", "modelyard_requests_total"),
            variable("team", "Team", "modelyard_tokens_total"),
        ]},
        "links": [], "panels": layout(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
