"""deploy/compose.yaml parses, points at files that exist, and wires the services together."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config.loader import load_config
from tests.deploy.support import DEPLOY, REPO

COMPOSE = DEPLOY / "compose.yaml"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount (named volumes left out)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (DEPLOY / source).resolve()
    return out


def _container_file(service: dict[str, Any], path: str) -> Path:
    for target, source in _bind_mounts(service).items():
        if Path(path).is_relative_to(target):
            return source / Path(path).relative_to(target)
    raise AssertionError(f"{path} is not on a bind mount")


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {"gateway", "redis", "prometheus", "grafana"} <= set(services)
    assert set(_compose()["volumes"]) >= {v.split(":")[0] for s in services.values()
                                          for v in s.get("volumes", []) if not v.startswith((".", "/"))}


def test_every_referenced_file_exists() -> None:
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context == REPO, name
            assert (context / build["dockerfile"]).is_file(), name
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        for env_file in service.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), name


def test_services_built_from_the_gateway_image_share_it() -> None:
    services = _compose()["services"]
    image = services["gateway"]["image"]
    for name in ("mock-openai", "mock-anthropic"):
        assert services[name]["image"] == image and services[name]["pull_policy"] == "never"
        assert services[name]["entrypoint"] == ["modelyard", "mock-provider"]


def test_gateway_config_is_valid_and_matches_the_stack() -> None:
    services = _compose()["services"]
    gateway = services["gateway"]
    command = gateway["command"]
    config_file = _container_file(gateway, command[command.index("--config") + 1])
    config = load_config(config_file, env={k: str(v) for k, v in gateway["environment"].items()})
    assert config.state.redis_url == "redis://redis:6379/0"
    assert "redis" in services and "redis" in config.state.redis_url
    for provider in config.providers.values():
        host = provider.base_url.split("//")[-1].split(":")[0] if provider.base_url else ""
        assert not host or "." in host or host in services, f"{host} is no compose service"
    assert f"127.0.0.1:{config.server.port}:{config.server.port}" in gateway["ports"]
    grace = int(gateway["stop_grace_period"].rstrip("s"))
    assert grace > config.server.shutdown_grace_s


def test_prometheus_scrapes_the_gateway_and_loads_the_rules() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_file = _container_file(prometheus, config_arg.split("=", 1)[1])
    scrape = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "modelyard"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == "gateway:8080"
    assert (config_file.parent / scrape["rule_files"][0]).is_file()


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), name
