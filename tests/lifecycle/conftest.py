from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.lifecycle.support import Gateway, write_yaml


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateway processes; every one is killed (with its workers) when the test ends."""
    started: list[Gateway] = []

    def start(config: dict[str, Any] | Path, port: int, *, args: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Gateway:
        path = config if isinstance(config, Path) else write_yaml(
            tmp_path / f"gateway-{len(started)}.yaml", config)
        gw = Gateway(path, port, tmp_path / f"gateway-{len(started)}.log", args=args, env=env)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.kill_all()
