"""Kustomize base and overlays render with kubectl and validate offline against the
Kubernetes 1.30 schemas; the shared service and the sidecar have the shape they promise."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.config.loader import parse_config
from tests.deploy.k8s_checks import (
    CRD_SCHEMAS, container, containers, container_env, pod_spec, prestop_sleep_s, secret_values, validate)
from tests.deploy.support import KUBERNETES, OVERLAYS, find, kustomize, one

TARGETS = {"base": KUBERNETES / "base"} | {name: KUBERNETES / "overlays" / name for name in OVERLAYS}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(path) for name, path in TARGETS.items()}


def _routing(docs: list[dict[str, Any]], deployment: dict[str, Any], c: dict[str, Any]) -> tuple[str, dict]:
    """The config file the container reads (from --config and its ConfigMap mount)."""
    config_path = Path(c["args"][c["args"].index("--config") + 1])
    (mount,) = [m for m in c["volumeMounts"] if config_path.is_relative_to(m["mountPath"])]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][str(config_path.relative_to(mount["mountPath"]))]
    return text, yaml.safe_load(text)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_rendered_document_validates(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    assert docs
    for doc in docs:
        validate(doc)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap"} <= kinds


def test_validation_is_strict_and_can_fail(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = one(rendered["shared-service"], "Deployment", "modelyard")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGets"] = {}
    with pytest.raises(Exception, match="httpGets"):
        validate(broken)
    monitor = one(rendered["shared-service"], "ServiceMonitor")
    bad_monitor = yaml.safe_load(yaml.safe_dump(monitor))
    bad_monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_monitor)


def test_only_allow_listed_crds_skip_the_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    builtin = re.compile(r"^(v1|(apps|autoscaling|policy|networking\.k8s\.io|batch)/v\w+)$")
    for docs in rendered.values():
        for doc in docs:
            assert builtin.match(doc["apiVersion"]) or (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS, doc["kind"]


def test_shared_service_deployment_shape(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared-service"]
    deployment = one(docs, "Deployment", "modelyard")
    spec = pod_spec(deployment)
    gateway = container(deployment, "gateway")
    assert deployment["spec"]["replicas"] == 3
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert gateway["readinessProbe"]["httpGet"]["port"] in ("http", ports["http"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    assert gateway["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert gateway["resources"]["requests"]["cpu"] and gateway["resources"]["requests"]["memory"]
    assert gateway["resources"]["limits"]["memory"]


def test_shared_service_drains_within_the_grace_period(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared-service"]
    deployment = one(docs, "Deployment", "modelyard")
    gateway = container(deployment, "gateway")
    _, config = _routing(docs, deployment, gateway)
    grace = float(config.get("server", {}).get("shutdown_grace_s", 30))
    sleep = prestop_sleep_s(gateway)
    assert sleep >= 3, "no preStop sleep: endpoints are not deregistered before the drain"
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace + sleep


def test_shared_service_config_resolves_from_the_pod_environment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared-service"]
    deployment = one(docs, "Deployment", "modelyard")
    gateway = container(deployment, "gateway")
    text, _ = _routing(docs, deployment, gateway)
    env = container_env(gateway, docs)
    env = {k: re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], v) for k, v in env.items()}
    config = parse_config(text, env=env)  # raises ConfigError listing every problem
    redis = one(docs, "Service", "modelyard-redis")
    assert config.state.redis_url.endswith(f"@{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0")
    assert config.server.port == {p["name"]: p["containerPort"] for p in gateway["ports"]}["http"]


def test_shared_service_companions_select_the_gateway_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shared-service"]
    deployment = one(docs, "Deployment", "modelyard")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())

    service = one(docs, "Service", "modelyard")
    assert selects(service["spec"]["selector"])
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelyard"}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    monitor = one(docs, "ServiceMonitor")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == service["spec"]["ports"][0]["port"]
    redis = one(docs, "Deployment", "modelyard-redis")
    assert one(docs, "Service", "modelyard-redis")["spec"]["selector"].items() <= \
        redis["spec"]["template"]["metadata"]["labels"].items()
    assert not selects(one(docs, "Service", "modelyard-redis")["spec"]["selector"])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_secrets_hold_placeholders_only(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for secret in find(rendered[target], "Secret"):
        for key, value in secret_values(secret).items():
            assert value == "" or value.startswith("replace-with-"), f"{key} looks like a real secret"


def test_sidecar_binds_to_loopback_without_redis(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    (app,) = find(docs, "Deployment")
    gateway = container(app, "modelyard")
    args = gateway["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    text, _ = _routing(docs, app, gateway)
    config = parse_config(text, env=container_env(gateway, docs))
    assert config.server.host == "127.0.0.1"
    assert config.state.redis_url == ""
    assert not [d for d in docs if "redis" in d["metadata"]["name"]]
    assert not [k for c in containers(app) for k in container_env(c, docs) if k.startswith("REDIS")]


def test_sidecar_metrics_on_their_own_port_and_tight_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    (app,) = find(docs, "Deployment")
    gateway = container(app, "modelyard")
    text, _ = _routing(docs, app, gateway)
    config = parse_config(text, env=container_env(gateway, docs))
    assert config.server.metrics_port and config.server.metrics_port != config.server.port
    assert [p["containerPort"] for p in gateway["ports"]] == [config.server.metrics_port]
    annotations = app["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == config.server.metrics_port
    resources = gateway["resources"]
    assert resources["requests"]["cpu"].endswith("m") and int(resources["requests"]["cpu"][:-1]) <= 100
    assert resources["limits"]["memory"].endswith("Mi") and int(resources["limits"]["memory"][:-2]) <= 256
    assert pod_spec(app)["terminationGracePeriodSeconds"] > config.server.shutdown_grace_s
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = gateway[probe]["exec"]["command"]
        assert command[-1].startswith(f"http://127.0.0.1:{config.server.port}/"), probe
    assert gateway["readinessProbe"]["exec"]["command"][-1].endswith("/readyz")
    assert gateway["livenessProbe"]["exec"]["command"][-1].endswith("/healthz")


def test_sidecar_application_talks_to_the_gateway_on_localhost(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    (app,) = find(docs, "Deployment")
    app_container = container(app, "app")
    env = container_env(app_container, docs)
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"
    gateway_env = container_env(container(app, "modelyard"), docs)
    assert env["OPENAI_API_KEY"] == gateway_env["MODELYARD_APP_KEY"]
    assert pod_spec(app)["securityContext"]["runAsNonRoot"] is True
