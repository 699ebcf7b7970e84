"""A config file that changes like a Kubernetes ConfigMap volume: `gateway.yaml` -> `..data/...`,
`..data` -> a timestamped directory, swapped atomically. No signal is sent."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import yaml

from tests.lifecycle.support import (
    AUTH, Gateway, free_port, metric_value, mock_config, until,
)

RELOADS = "modelyard_config_reloads_total"


class ConfigMapVolume:
    """The layout the kubelet's atomic writer keeps up to date."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seq = itertools.count()
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / "gateway.yaml"

    def publish(self, text: str) -> None:
        stamp = self.root / f"..2026_01_01_00_00_00.{next(self._seq):09d}"
        stamp.mkdir()
        (stamp / "gateway.yaml").write_text(text, encoding="utf-8")
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(stamp.name, tmp)
        os.replace(tmp, self.root / "..data")  # the one atomic step
        if not self.path.is_symlink():
            os.symlink("..data/gateway.yaml", self.path)
        if old is not None:  # the kubelet removes the previous generation
            (self.root / old / "gateway.yaml").unlink()
            (self.root / old).rmdir()


async def listed(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(url + "/v1/models", headers=AUTH) as r:
        assert r.status == 200
        return [m["id"] for m in (await r.json())["data"]]


async def test_configmap_symlink_swap_is_picked_up_and_a_bad_one_refused(
        spawn: Callable[..., Gateway], tmp_path: Path) -> None:
    port = free_port()
    vol = ConfigMapVolume(tmp_path / "config")
    def dump(d: dict[str, Any]) -> str:
        return yaml.safe_dump(d, sort_keys=False)

    vol.publish(dump(mock_config(port, aliases={"first-alias": "mock/echo"})))
    gw = spawn(vol.path, port)
    await gw.wait_ready()
    async with aiohttp.ClientSession() as session:
        assert "first-alias" in await listed(session, gw.url)

        vol.publish(dump(mock_config(port, aliases={"second-alias": "mock/echo"})))
        t0 = time.perf_counter()

        async def swapped() -> bool:
            return "second-alias" in await listed(session, gw.url)

        await until(swapped, 5, "the swapped-in config to serve")
        print(f"ConfigMap swap picked up in {(time.perf_counter() - t0) * 1000:.0f} ms")
        assert "first-alias" not in await listed(session, gw.url)
        assert await metric_value(session, gw.url, RELOADS, 'result="ok"') == 1

        bad = mock_config(port, aliases={"third-alias": "mock/echo"})
        bad["providers"]["local"]["adapter"] = "no-such-adapter"
        vol.publish(dump(bad))
        line = await gw.wait_log(lambda r: r["msg"].startswith("config reload refused"), 5)
        assert "no-such-adapter" in line["msg"] and line["level"] == "error"
        assert await metric_value(session, gw.url, RELOADS, 'result="error"') == 1
        models = await listed(session, gw.url)
        assert "second-alias" in models and "third-alias" not in models
        body = {"model": "second-alias", "messages": [{"role": "user", "content": "still here"}]}
        async with session.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status == 200
            assert (await r.json())["choices"][0]["message"]["content"]

        # A good config after the bad one is taken again.
        vol.publish(dump(mock_config(port, aliases={"fourth-alias": "mock/echo"})))

        async def fourth() -> bool:
            return "fourth-alias" in await listed(session, gw.url)

        await until(fourth, 5, "the next good config")
        assert await metric_value(session, gw.url, RELOADS, 'result="ok"') == 2
