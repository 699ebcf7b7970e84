"""Real `modelyard serve` processes: `--workers 2` aggregates /metrics across workers,
`server.metrics_port` moves /metrics off the API port, `--log-format text` (issue 7, items 1-2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.observability.support import (KEY_ALPHA, KEY_IDS, MASTER, SECRETS, Gateway, auth,
                                         chat, free_port, http_get, http_post, parse,
                                         write_config)

REQUESTS = 24
PROMPT = "PROMPT-TEXT-subprocess-3e8a"


def mock_config(**sections: Any) -> dict[str, Any]:
    """Only the in-process `mock` provider: no upstream server needed by the subprocess."""
    cfg: dict[str, Any] = {
        "server": {"shutdown_grace_s": 1},
        "auth": {"master_key": MASTER, "keys": [
            {"id": KEY_IDS[0], "key": KEY_ALPHA, "team": "alpha"}]},
        "teams": {"alpha": {}},
        "providers": {"local": {"adapter": "mock"}},
        "routes": {"mock/*": {"targets": [{"provider": "local"}], "models": ["mock/echo"]}},
        "default_model": "mock/echo",
        "usage": {"jsonl_path": ""},
    }
    cfg.update(sections)
    return cfg


def requests_total(text: str) -> float:
    return sum(v for (n, _), v in parse(text).items() if n == "modelyard_requests_total")


def per_process_totals(multiproc_dir: Path, tmp: Path) -> list[float]:
    """requests_total as each worker's own counter file holds it."""
    totals = []
    for i, f in enumerate(sorted(multiproc_dir.glob("counter_*.db"))):
        one = tmp / f"one-{i}"
        one.mkdir()
        shutil.copy(f, one / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))
        totals.append(requests_total(generate_latest(registry).decode()))
    return totals


def test_workers_aggregate_and_metrics_port(tmp_path: Path, redis_url: str) -> None:
    metrics_port = free_port()
    path = write_config(tmp_path / "gateway.yaml", mock_config(
        state={"redis_url": redis_url},
        server={"shutdown_grace_s": 1, "metrics_port": metrics_port,
                "metrics_host": "127.0.0.1"}))
    mp_dir = tmp_path / "multiproc"
    mp_dir.mkdir()
    gw = Gateway(path, tmp_path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
    with gw:
        gw.wait_log('"modelyard ready"', 2)  # /readyz answers once the first worker is up
        for _ in range(REQUESTS):  # a new connection each: SO_REUSEPORT spreads them
            status, _ = http_post(f"{gw.url}/v1/chat/completions",
                                  json.dumps(chat("mock/echo", PROMPT)).encode(), auth(KEY_ALPHA))
            assert status == 200
        assert http_get(f"{gw.url}/metrics")[0] == 404  # not on the API port
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker
            status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            assert requests_total(body.decode()) == REQUESTS
        per_worker = per_process_totals(mp_dir, tmp_path)
    assert gw.proc is not None and gw.proc.returncode == 0, gw.stderr()
    assert sum(per_worker) == REQUESTS
    assert len([t for t in per_worker if t > 0]) == 2, per_worker  # both workers served


def test_text_log_format_and_no_redis_gauge(tmp_path: Path) -> None:
    path = write_config(tmp_path / "gateway.yaml", mock_config())
    gw = Gateway(path, tmp_path, "--log-format", "text")
    with gw:
        status, _ = http_post(f"{gw.url}/v1/chat/completions",
                              json.dumps(chat("mock/echo", PROMPT)).encode(), auth(KEY_ALPHA))
        assert status == 200
        status, _ = http_post(f"{gw.url}/v1/chat/completions",
                              json.dumps(chat("nope/x", PROMPT)).encode(), auth(KEY_ALPHA))
        assert status == 404
        status, body = http_get(f"{gw.url}/metrics")
        assert status == 200
    text = body.decode()
    names = {n for n, _ in parse(text)}
    assert "modelyard_requests_total" in names
    assert "modelyard_redis_up" not in names  # absent without Redis (else RedisDown fires)
    log = gw.stderr()
    lines = [ln for ln in log.splitlines() if ln.strip()]
    access = [ln for ln in lines if "modelyard.access" in ln]
    assert len(access) == 2, log
    ok = next(ln for ln in access if "status=200" in ln)
    assert f"key_id={KEY_IDS[0]}" in ok and "model=mock/echo" in ok and "provider=local" in ok
    assert "team=alpha" in ok and "latency_ms=" in ok and "attempts=1" in ok
    assert any("status=404" in ln for ln in access)
    for ln in lines:
        assert not ln.lstrip().startswith("{"), ln  # not JSON
    for needle in (*SECRETS, PROMPT):
        assert needle not in log
