"""Reading the request body: one exact read when Content-Length is known, aiohttp's own read
for chunked or compressed bodies (decompressed, the size limit applying to what is read)."""
from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest

from tests.core.support import KEY_ALL, auth
from tests.fakes import FakeOpenAI

BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "zip " * 300}]}


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_compressed_request_body_is_read_whole(fake: FakeOpenAI, gw: Any, encoding: str,
                                                     pack: Any) -> None:
    raw = orjson.dumps(BODY)
    packed = pack(raw)
    assert len(packed) < len(raw)  # Content-Length is smaller than what the JSON needs
    resp = await gw.post("/v1/chat/completions", data=packed, headers={
        **auth(KEY_ALL), "content-type": "application/json", "content-encoding": encoding})
    assert resp.status == 200, await resp.text()
    assert fake.last.json["messages"] == BODY["messages"]


async def test_compressed_body_over_the_limit_is_413(fake: FakeOpenAI, gw: Any) -> None:
    big = dict(BODY, messages=[{"role": "user", "content": "a" * (1024 * 1024 + 10)}])
    packed = gzip.compress(orjson.dumps(big))  # small on the wire, over 1 MiB unpacked
    resp = await gw.post("/v1/chat/completions", data=packed, headers={
        **auth(KEY_ALL), "content-type": "application/json", "content-encoding": "gzip"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    assert fake.requests == []


@pytest.mark.parametrize("data", [b"", b"{", b'{"model": "openai/gpt-4o", "messages": [}'])
async def test_empty_or_broken_bodies_are_400(fake: FakeOpenAI, gw: Any, data: bytes) -> None:
    resp = await gw.post("/v1/chat/completions", data=data, headers={
        **auth(KEY_ALL), "content-type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"
    assert fake.requests == []


async def test_exact_read_keeps_the_connection_usable(fake: FakeOpenAI, gw: Any) -> None:
    for i in range(3):  # the same keep-alive connection: each body read exactly, no leftovers
        body = dict(BODY, messages=[{"role": "user", "content": f"n{i}"}])
        resp = await gw.post("/v1/chat/completions", json=body, headers=auth(KEY_ALL))
        assert resp.status == 200
        assert fake.last.json["messages"][0]["content"] == f"n{i}"
