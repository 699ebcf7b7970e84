"""Streams after the commit point, and client disconnects cancelling the upstream call."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.types import loads
from tests.resilience.conftest import AUTH, chat, frames, gateway_config, post, route
from tests.resilience.fake_upstream import hang, status, stream

TIMEOUTS = {"connect_s": 1, "first_token_s": 2, "total_s": 10, "idle_s": 0.3}


def _content(data: list[str]) -> str:
    out = ""
    for d in data:
        if d != "[DONE]":
            for c in loads(d).get("choices", []):
                out += c["delta"].get("content") or ""
    return out


async def test_failures_before_the_first_byte_are_retried_and_invisible(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=TIMEOUTS))
    fake.script("p1", status(500), stream(0, end="error"), stream(3))
    r = await post(client, chat(stream=True))
    assert r.status == 200
    data = frames(r.text)
    assert data[-1] == "[DONE]"
    assert _content(data) == "hi0 hi1 hi2 "
    assert not any('"error"' in d for d in data)
    assert fake.calls["p1"] == 3


@pytest.mark.parametrize("end,words", [
    ("drop", "cut the stream"),
    ("truncate", "without [DONE]"),
    ("error", "mid-stream"),
    ("stall", "stalled"),
])
async def test_failures_after_the_first_byte_end_with_one_error_event(fake, gateway, end, words):
    client = await gateway(gateway_config(fake, {"m": route("p1", "p2")}, timeouts=TIMEOUTS))
    fake.script("p1", stream(2, end=end, chunk_delay_s=0.05))  # the end comes after the commit
    fake.script("p2", stream(2, end=end, chunk_delay_s=0.05))
    r = await post(client, chat(stream=True))
    assert r.status == 200
    data = frames(r.text)
    assert "[DONE]" not in data
    assert _content(data[:-1]) == "hi0 hi1 "
    err = loads(data[-1])["error"]
    assert words in err["message"]
    assert set(err) == {"message", "type", "code"}
    assert sum(1 for d in data if '"error"' in d) == 1
    assert fake.calls["p1"] + fake.calls["p2"] == 1  # no retry after the commit point
    assert r.elapsed < 2.0
    if end == "stall":  # the gateway hung up on the stalled upstream
        which = "p1" if fake.calls["p1"] else "p2"
        await asyncio.wait_for(fake.cancelled[which].wait(), 1.0)


async def test_a_slow_but_steady_stream_is_not_cut_by_the_idle_timeout(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=TIMEOUTS))
    fake.script("p1", stream(5, chunk_delay_s=0.15))  # 0.6 s in all, gaps under idle_s
    r = await post(client, chat(stream=True))
    assert frames(r.text)[-1] == "[DONE]"


async def test_client_disconnect_cancels_a_non_streamed_upstream_call(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=TIMEOUTS))
    fake.script("p1", hang(30))
    with pytest.raises(asyncio.TimeoutError):
        await client.post("/v1/chat/completions", json=chat(), headers=AUTH,
                          timeout=aiohttp.ClientTimeout(total=0.3))
    await asyncio.wait_for(fake.cancelled["p1"].wait(), 1.0)


async def test_client_disconnect_before_the_first_event_cancels_the_stream(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=TIMEOUTS))
    fake.script("p1", stream(3, delay_s=30))
    with pytest.raises(asyncio.TimeoutError):
        await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH,
                          timeout=aiohttp.ClientTimeout(total=0.3))
    await asyncio.wait_for(fake.cancelled["p1"].wait(), 1.0)


async def test_client_disconnect_mid_stream_cancels_the_upstream_stream(fake, gateway):
    slow = dict(TIMEOUTS, idle_s=30)
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=slow))
    fake.script("p1", stream(2, end="stall"))
    resp = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
    assert resp.status == 200
    first = await resp.content.readline()
    assert first.startswith(b"data: ")
    resp.close()  # the client goes away while the upstream is silent
    await asyncio.wait_for(fake.cancelled["p1"].wait(), 1.0)
    assert fake.open == 0


async def test_completed_streams_give_their_connection_back_to_the_pool(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=TIMEOUTS))
    for _ in range(5):
        r = await post(client, chat(stream=True))
        assert frames(r.text)[-1] == "[DONE]"
    assert len(fake.peers) == 1  # one keep-alive connection served all five
