"""Alert rules and the compose scrape config load in Prometheus's own tool, promtool."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.support import ALERTS, DEPLOY, promtool_check_expressions, run, tool

RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"

REQUIRED_ALERTS = {
    "ModelyardProviderDown",
    "ModelyardProviderErrorRatioHigh",
    "ModelyardLatencyP95High",
    "ModelyardTimeToFirstTokenHigh",
    "ModelyardQuotaNearlySpent",
    "ModelyardRateLimitingSurge",
    "ModelyardUsageRecordsDropped",
    "ModelyardConfigReloadFailed",
}


def _alerts() -> list[dict]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_pass_promtool_check() -> None:
    result = run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_alert_rules_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_cover_provider_down_and_error_ratio_firing() -> None:
    data = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    firing = {case["alertname"] for test in data["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in data["tests"] for case in test["alert_rule_test"]
             if not case.get("exp_alerts")}
    for name in ("ModelyardProviderDown", "ModelyardProviderErrorRatioHigh"):
        assert name in firing, f"{name} is never tested firing"
        assert name in quiet, f"{name} is never tested staying quiet"


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: with the provider-down threshold inverted they must."""
    broken = ALERTS.read_text(encoding="utf-8").replace(
        "max by (provider) (modelyard_provider_up) == 0", "max by (provider) (modelyard_provider_up) == 1")
    assert broken != ALERTS.read_text(encoding="utf-8")
    (tmp_path / "alerts.yaml").write_text(broken, encoding="utf-8")
    (tmp_path / "alerts_test.yaml").write_text(RULES_TEST.read_text(encoding="utf-8"), encoding="utf-8")
    result = run([tool("promtool"), "test", "rules", str(tmp_path / "alerts_test.yaml")])
    assert result.returncode != 0
    assert "ModelyardProviderDown" in result.stdout + result.stderr


def test_required_alerts_exist_with_severity_and_summary() -> None:
    alerts = _alerts()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert REQUIRED_ALERTS <= set(names), REQUIRED_ALERTS - set(names)
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_promtool_check_config_loads_the_rules_next_to_it() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yaml"]
    assert (PROMETHEUS_YML.parent / "alerts.yaml").is_file()
    # Run from elsewhere: rule_files must resolve relative to prometheus.yml itself.
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS_YML)], cwd=Path("/"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_expression_parser_rejects_bad_promql() -> None:
    """The parse check used for the dashboard is real: bad PromQL fails it."""
    assert promtool_check_expressions(["sum(rate(modelyard_requests_total[5m]))"]).returncode == 0
    assert promtool_check_expressions(["sum(rate(modelyard_requests_total[5m])"]).returncode != 0
    assert promtool_check_expressions(['rate(modelyard_requests_total{model=~"a"}[$__rate_interval])']).returncode != 0
