"""The benchmark harness itself: a peer that dies mid-run (LiteLLM's proxy has segfaulted here
under load) is started again and the report says so; one of ours dying fails the run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.bench.measure import PEER_RESTARTS, Runner
from tests.bench.procs import HarnessError, Proc
from tests.bench.runner import scenario
from tests.bench.targets import Target
from tests.redis_fixture import free_port


def mock_as(name: str, tmp: Path) -> Target:
    """The fast mock started under another target's name (it answers /readyz)."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.bench.fastmock", "--port", str(port)]
    return Target(name, port, True, Proc(name, argv, "", tmp / f"{name}.log"), "/readyz")


def test_a_dead_peer_is_started_again_and_noted(tmp_path: Path) -> None:
    peer, ours = mock_as("litellm", tmp_path), mock_as("modelyard-redis", tmp_path)
    runner = Runner("wrk", tmp_path, "", 1, "sk-x", mock=peer)
    sc = scenario("ns_c16")
    try:
        for t in (peer, ours):
            t.start(30)
        first = peer.proc.pid
        for n in range(1, PEER_RESTARTS + 1):
            peer.proc.stop()
            runner._revive(peer, sc)
            assert peer.proc.alive() and peer.proc.pid != first
            assert len(runner.notes) == n and "litellm died" in runner.notes[-1]
            assert f"({n} of at most {PEER_RESTARTS})" in runner.notes[-1]
        peer.proc.stop()
        with pytest.raises(HarnessError, match="litellm died"):  # restarts are bounded
            runner._revive(peer, sc)
        ours.proc.stop()
        with pytest.raises(HarnessError, match="modelyard-redis died"):
            runner._revive(ours, sc)
        assert len(runner.notes) == PEER_RESTARTS
    finally:
        for t in (peer, ours):
            t.proc.stop()
