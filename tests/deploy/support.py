"""Shared helpers of the deployment tests: repository paths and the offline validators.

`make test` runs `bash deploy/tools.sh` first, which installs kubectl, promtool and
kubernetes-validate when they are missing; these helpers fail loudly if they are not there.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("shared-service", "sidecar")
KUBERNETES_VERSION = "1.30"  # the schemas rendered manifests are validated against
DATASOURCE_PROVISIONING = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "modelyard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `bash deploy/tools.sh`"
    return path


def run(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization with `kubectl kustomize`; every non-empty YAML document."""
    result = run([tool("kubectl"), "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def promtool_check_expressions(exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """Parse PromQL with Prometheus's own parser: each expression becomes a recording rule
    of a temporary rules file that `promtool check rules` loads."""
    rules = {"groups": [{"name": "parse-only", "rules": [
        {"record": f"parse_only:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    with tempfile.TemporaryDirectory(prefix="modelyard-promql-") as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        return run([tool("promtool"), "check", "rules", str(path)])


def provisioned_datasource_uid() -> str:
    data = yaml.safe_load(DATASOURCE_PROVISIONING.read_text(encoding="utf-8"))
    (source,) = [d for d in data["datasources"] if d["type"] == "prometheus"]
    return str(source["uid"])
