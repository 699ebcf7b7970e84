"""Offline validation of rendered manifests: Kubernetes JSON schemas (kubernetes-validate,
strict) for built-in kinds, and a structural schema for the CRD kinds listed here."""
from __future__ import annotations

import base64
from typing import Any

import jsonschema
import kubernetes_validate

from tests.deploy.support import KUBERNETES_VERSION

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "namespace": {"type": "string"}, "labels": _LABELS, "annotations": _LABELS}}

# Kinds that are CustomResourceDefinitions, so not in the Kubernetes schemas: each is
# checked against the part of its CRD's schema the manifests use (Prometheus Operator v1).
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "additionalProperties": False,
                                 "properties": {"matchLabels": _LABELS}},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]}},
                        "required": ["port"]}},
                },
            },
        },
    },
}


def validate(doc: dict[str, Any]) -> None:
    """Raise if `doc` is not a valid object of its kind."""
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        jsonschema.validate(doc, crd)
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return data | secret.get("stringData", {})


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(doc) if c["name"] == name]
    return found


def container_env(c: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment: plain values, secret keys (decoded) and envFrom secrets."""
    secrets = {d["metadata"]["name"]: secret_values(d) for d in docs if d["kind"] == "Secret"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env |= secrets[source["secretRef"]["name"]]
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def prestop_sleep_s(c: dict[str, Any]) -> int:
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0
