"""The Grafana dashboard: JSON Grafana accepts, wired to the provisioned datasource, and
every query valid PromQL (checked with Prometheus's own parser through promtool)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any, Iterator

import yaml

from tests.deploy.metric_names import dashboard_expressions
from tests.deploy.support import DASHBOARD, DEPLOY, REPO, promtool_check_expressions, provisioned_datasource_uid

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "state-timeline", "table", "gauge"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _as_promql(expr: str, variables: set[str]) -> str:
    """Substitute Grafana's variables as Grafana would before sending the query."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in variables:
        expr = re.sub(r"\$\{?" + name + r"\b\}?", ".*", expr)
    return expr


def test_dashboard_is_valid_json_with_schema_version_and_uid() -> None:
    dashboard = _dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard carries no id"


def test_panel_ids_are_unique_and_every_panel_has_a_grid_position() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(panels) > 20
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert all(isinstance(v, int) and v >= 0 for v in grid.values()), panel["title"]
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()["panels"]):
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_and_query_uses_the_provisioned_prometheus_datasource() -> None:
    uid = provisioned_datasource_uid()
    dashboard = _dashboard()
    for panel in _panels(dashboard["panels"]):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']} has no query"
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            assert target["refId"] and target["expr"], panel["title"]
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == uid, var["name"]


def test_every_query_parses_as_promql() -> None:
    dashboard = _dashboard()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    exprs = [_as_promql(e, variables) for e in dashboard_expressions(dashboard)]
    assert len(exprs) > 30
    assert not [e for e in exprs if "$" in e], "an unknown Grafana variable is left"
    result = promtool_check_expressions(exprs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_template_variables_query_label_values_of_gateway_metrics() -> None:
    for var in _dashboard()["templating"]["list"]:
        match = re.fullmatch(r"label_values\((modelyard_\w+), (\w+)\)", var["query"]["query"])
        assert match and match.group(2) == var["name"], var
        assert var["includeAll"] and var["allValue"] == ".*"


def test_dashboard_covers_what_on_call_needs() -> None:
    exprs = "\n".join(dashboard_expressions(_dashboard()))
    titles = " ".join(p["title"].lower() for p in _panels(_dashboard()["panels"]))
    for needed in ("histogram_quantile(0.95, sum by (le, model) (rate(modelyard_request_duration_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le, provider) (rate(modelyard_request_duration_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le, model) (rate(modelyard_time_to_first_token_seconds_bucket",
                   "histogram_quantile(0.95, sum by (le, provider) (rate(modelyard_time_to_first_token_seconds_bucket",
                   "modelyard_overhead_seconds_bucket", "sum by (team, type) (rate(modelyard_tokens_total",
                   "sum by (team) (rate(modelyard_cost_usd_total", "modelyard_rate_limited_total",
                   "modelyard_retries_total", "modelyard_fallbacks_total", "modelyard_provider_up"):
        assert needed in exprs, needed
    for word in ("requests", "error", "latency", "first token", "tokens", "cost", "rate limited",
                 "retries", "fallbacks", "provider", "overhead"):
        assert word in titles, word


def test_committed_dashboard_matches_its_generator() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, 'deploy/grafana');"
         "import build_dashboard; sys.stdout.write(build_dashboard.render())"],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout == DASHBOARD.read_text(encoding="utf-8"), \
        "run .venv/bin/python deploy/grafana/build_dashboard.py after editing it"


def test_dashboard_provisioning_points_at_the_mounted_folder() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/modelyard.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert (DEPLOY / mounts[entry["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
