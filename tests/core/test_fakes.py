"""The fake OpenAI upstream itself (tests/fakes.py), driven by a plain aiohttp client."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest

from tests.fakes import (DONE, FakeOpenAI, Recorded, Reply, Stream, completion, error_body, sse,
                         split_bytes, text_stream)

WAIT = 5.0
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_auto_answers_follow_the_request(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    url = fake.base_url
    async with http.post(f"{url}/chat/completions?x=1", json=CHAT,
                         headers={"Authorization": "Bearer sk-t"}) as resp:
        body = await resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o"
    assert body["choices"][0]["message"]["content"] == "echo: hi there"
    rec = fake.last
    assert (rec.method, rec.path, rec.query) == ("POST", "/v1/chat/completions", {"x": "1"})
    assert rec.headers["authorization"] == "Bearer sk-t" and rec.json == CHAT
    async with http.post(f"{url}/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = await resp.read()
    assert raw.endswith(DONE) and b'"usage"' not in raw
    async with http.post(f"{url}/chat/completions", json={
            **CHAT, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        assert b'"choices":[],"usage"' in await resp.read()
    async with http.post(f"{url}/embeddings", json={"model": "e", "input": ["a", "b"]}) as resp:
        assert [d["index"] for d in (await resp.json())["data"]] == [0, 1]
    async with http.get(f"{url}/models") as resp:
        assert (await resp.json())["object"] == "list"
    async with http.get(f"{url}/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_url"
    assert len(fake.requests) == 6 and rec.outcome == "answered" and rec.finished.is_set()


async def test_queue_then_default_then_auto(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    def by_request(rec: Recorded) -> Reply:
        return Reply(200, completion(f"for {rec.json['model']}"))

    fake.push(Reply(429, error_body("slow down", "requests", "rate_limit_exceeded"),
                    headers={"Retry-After": "7", "retry-after-ms": "6596"}),
              Reply(200, b"not json", content_type="text/plain"))
    fake.default = by_request
    answers = []
    for _ in range(3):
        async with http.post(f"{fake.base_url}/chat/completions", json=CHAT) as resp:
            answers.append((resp.status, dict(resp.headers), await resp.read()))
    assert answers[0][0] == 429 and answers[0][1]["Retry-After"] == "7"
    assert answers[0][1]["retry-after-ms"] == "6596"
    assert orjson.loads(answers[0][2])["error"]["code"] == "rate_limit_exceeded"
    assert answers[1][0] == 200 and answers[1][2] == b"not json"
    assert orjson.loads(answers[2][2])["choices"][0]["message"]["content"] == "for gpt-4o"


async def test_gate_holds_the_headers(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    gate = asyncio.Event()
    fake.push(Reply(200, completion("late"), gate=gate))
    task = asyncio.ensure_future(http.post(f"{fake.base_url}/chat/completions", json=CHAT))
    await fake.wait_requests(1)
    assert not task.done() and not fake.last.finished.is_set()
    gate.set()
    resp = await asyncio.wait_for(task, WAIT)
    assert (await resp.json())["choices"][0]["message"]["content"] == "late"


async def test_drop_without_an_answer(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.push(Reply(drop=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post(f"{fake.base_url}/chat/completions", json=CHAT)
    assert fake.last.outcome == "dropped" and not fake.last.client_gone


async def test_hang_until_the_client_leaves(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.push(Reply(hang=True))
    task = asyncio.ensure_future(http.post(f"{fake.base_url}/chat/completions", json=CHAT))
    [rec] = await fake.wait_requests(1)
    task.cancel()
    await asyncio.wait_for(rec.finished.wait(), WAIT)
    assert rec.outcome == "hung" and rec.client_gone


async def test_close_cuts_hung_answers_promptly(http: aiohttp.ClientSession) -> None:
    fake = await FakeOpenAI().start()
    fake.push(Reply(hang=True), Stream(text_stream(["a"]), hang_after=1))
    plain = asyncio.ensure_future(http.post(f"{fake.base_url}/chat/completions", json=CHAT))
    async with asyncio.timeout(WAIT):
        await fake.wait_requests(1)  # the first request takes the first answer
        resp = await http.post(f"{fake.base_url}/chat/completions", json=CHAT)
        first = await resp.content.readuntil(b"\n\n")
        assert b'"role":"assistant"' in first
        await fake.close()
        with pytest.raises(aiohttp.ClientError):
            await plain
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert [r.client_gone for r in fake.requests] == [False, False]


async def test_stream_drop_and_missing_done(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    events = text_stream(["a", "b"])
    fake.push(Stream(events, drop_after=2), Stream(events, done=False))
    async with http.post(f"{fake.base_url}/chat/completions", json=CHAT) as resp:
        got = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in resp.content.iter_any():
                got += piece
    assert got == sse(events[:2], done=False)
    assert fake.requests[0].outcome == "dropped"
    async with http.post(f"{fake.base_url}/chat/completions", json=CHAT) as resp:
        assert await resp.read() == sse(events, done=False)


async def test_split_and_pause_keep_the_bytes(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    events: list[Any] = text_stream(["Ünï", "cødé"])
    release = asyncio.Event()
    fake.push(Stream(events, split=range(1, 8), pause={3: release}))
    async with http.post(f"{fake.base_url}/chat/completions", json=CHAT) as resp:
        head = await asyncio.wait_for(resp.content.readexactly(len(sse(events[:3], done=False))),
                                      WAIT)
        release.set()
        tail = await asyncio.wait_for(resp.read(), WAIT)
    assert head + tail == sse(events)
    assert split_bytes(b"abcdefghij", (1, 2)) == [b"a", b"bc", b"d", b"ef", b"g", b"hi", b"j"]


async def test_wait_requests_is_bounded(fake: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_requests(1, timeout=0.05)
