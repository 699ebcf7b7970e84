"""Helpers for the observability tests: config builders, /metrics scraping and deltas, gateway
subprocesses on free ports."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_fixture import free_port

ROOT = Path(__file__).resolve().parents[2]
MASTER = "sk-master-obs-5f0c2a91d7"
KEY_ALPHA = "sk-alpha-obs-81d3e6c2b4"  # team alpha (configured, has a quota)
KEY_SLOW = "sk-slow-obs-2b9e7c4d10"  # team alpha, rpm 1
KEY_STRAY = "sk-stray-obs-6a1f0e8b33"  # team not in `teams:` -> label `other`
KEY_NOTEAM = "sk-noteam-obs-9c7d5e3f21"  # no team -> label `none`
PROVIDER_KEY_1 = "sk-upstream-one-44e1b0a9"
PROVIDER_KEY_2 = "sk-upstream-two-0d7c3f5e"
KEY_IDS = ("key-alpha-7781", "key-slow-5521", "key-stray-3310", "key-noteam-4409")
SECRETS = (MASTER, KEY_ALPHA, KEY_SLOW, KEY_STRAY, KEY_NOTEAM, PROVIDER_KEY_1, PROVIDER_KEY_2)
STRAY_TEAM = "unlisted-team-9"
PRICE_MAIN = (2.0, 10.0)  # USD per million tokens (input, output)
PRICE_BACKUP = (1.0, 4.0)
Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def config(url1: str, url2: str, *, redis_url: str = "", max_models: int = 2,
           **sections: Any) -> dict[str, Any]:
    """Two fake upstreams (`up1`, `up2`), a priced route with retries and a fallback, a route
    without fallback, a wildcard route, and keys for each team-label case."""
    retry2 = {"attempts": 2, "backoff_s": 0, "backoff_max_s": 0}
    cfg: dict[str, Any] = {
        "server": {"max_body_mb": 1, "shutdown_grace_s": 1},
        "state": {"redis_url": redis_url},
        "auth": {"master_key": MASTER, "keys": [
            {"id": KEY_IDS[0], "key": KEY_ALPHA, "team": "alpha"},
            {"id": KEY_IDS[1], "key": KEY_SLOW, "team": "alpha", "limits": {"rpm": 1}},
            {"id": KEY_IDS[2], "key": KEY_STRAY, "team": STRAY_TEAM},
            {"id": KEY_IDS[3], "key": KEY_NOTEAM},
        ]},
        "teams": {"alpha": {"quota": {"tokens": 1_000_000, "period": "month"}},
                  "beta": {}},
        "providers": {
            "up1": {"adapter": "openai", "base_url": url1, "api_key": PROVIDER_KEY_1},
            "up2": {"adapter": "openai", "base_url": url2, "api_key": PROVIDER_KEY_2},
        },
        "routes": {
            "chat/main": {"targets": [{"provider": "up1", "model": "m-main"}],
                          "fallbacks": ["chat/backup"], "retries": retry2,
                          "price": {"input": PRICE_MAIN[0], "output": PRICE_MAIN[1]}},
            "chat/backup": {"targets": [{"provider": "up2", "model": "m-backup"}],
                            "price": {"input": PRICE_BACKUP[0], "output": PRICE_BACKUP[1]}},
            "chat/solo": {"targets": [{"provider": "up1", "model": "m-solo"}], "retries": retry2},
            "wild/*": {"targets": [{"provider": "up2"}]},
        },
        "default_model": "chat/main",
        "retries": {"attempts": 1, "backoff_s": 0},
        "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 10, "idle_s": 5},
        "cooldown": {"failures": 1000, "window_s": 60, "cooldown_s": 30},
        "metrics": {"max_models": max_models},
    }
    cfg.update(sections)
    return cfg


def write_config(path: Path, cfg: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- /metrics


def parse(text: str) -> Samples:
    """Every sample of the exposition, by (sample name, label set)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def changed(before: Samples, after: Samples, name: str) -> dict[Labels, float]:
    """The label sets of `name` whose value moved, with the change."""
    out = {}
    for (n, labels), v in after.items():
        if n == name:
            d = v - before.get((n, labels), 0.0)
            if abs(d) > 1e-12:
                out[labels] = d
    return out


def lbl(**labels: str) -> Labels:
    return frozenset(labels.items())


def label_values(text: str) -> Iterator[tuple[str, str, str]]:
    """(sample name, label name, label value) of every labelled modelyard sample."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for k, v in s.labels.items():
                yield s.name, k, v


# ----------------------------------------------------------------------------- subprocesses


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, headers: Mapping[str, str],
              timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Gateway:
    """`python -m gateway serve` in a subprocess on a free port, stderr kept in a file."""

    def __init__(self, config_path: Path, tmp: Path, *args: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.stderr_path = tmp / f"gateway-{self.port}.log"
        self.argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
                     "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Gateway":
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.stderr()}")
            try:
                if http_get(f"{self.url}/readyz", timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready: {self.stderr()}")

    def wait_log(self, text: str, count: int, timeout: float = 20.0) -> None:
        """Wait until `text` appears on `count` lines of stderr (e.g. every worker ready)."""
        deadline = time.monotonic() + timeout
        while sum(text in ln for ln in self.stderr().splitlines()) < count:
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise TimeoutError(f"{count} x {text!r} not logged: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
