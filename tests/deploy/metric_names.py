"""The Prometheus series names the deploy/ dashboard and alert rules query.

Extracted by parsing deploy/grafana/dashboards/modelyard.json (panel targets and template
variables) and deploy/prometheus/alerts.yaml (rule expressions), never kept by hand. Names
are sample names as they appear in the gateway's /metrics text (what prometheus_client's
parser gives as `Sample.name`): counters end in `_total`, histograms are queried through
`_bucket` (and maybe `_sum`/`_count`). A histogram's `_bucket` samples appear once it has
been observed, so a test comparing against /metrics should scrape after some traffic.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

_DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD_PATH = _DEPLOY / "grafana" / "dashboards" / "modelyard.json"
ALERTS_PATH = _DEPLOY / "prometheus" / "alerts.yaml"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
# A metric name is an identifier not preceded by another identifier character; label names
# inside {...}, by (...) and without (...) never start with the metric prefix.
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])(modelyard_[A-Za-z0-9_]*)(?![A-Za-z0-9_:])")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def metrics_in_promql(expr: str) -> set[str]:
    """Metric names an expression selects (string literals and comments ignored)."""
    code = _COMMENT.sub(" ", _STRING.sub('""', expr))
    return set(_METRIC.findall(code))


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [target["expr"] for panel in _walk_panels(dashboard.get("panels", []))
            for target in panel.get("targets", []) if target.get("expr")]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        out.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return out


def rule_expressions(rules: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in rules.get("groups", []) for rule in group.get("rules", [])]


def dashboard_metrics(dashboard_path: Path = DASHBOARD_PATH, alerts_path: Path = ALERTS_PATH) -> set[str]:
    dashboard = json.loads(dashboard_path.read_text(encoding="utf-8"))
    rules = yaml.safe_load(alerts_path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for expr in dashboard_expressions(dashboard) + rule_expressions(rules):
        names |= metrics_in_promql(expr)
    for query in variable_queries(dashboard):
        names |= {m for m in _LABEL_VALUES.findall(query) if m.startswith("modelyard_")}
    return names


DASHBOARD_METRICS: set[str] = dashboard_metrics()
