"""Request validation through the app: OpenAI error shape, `param`, limits, passthrough."""
from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from gateway.errors import InvalidRequest
from gateway.validation import chat_request
from tests.core.support import KEY_ALL, auth
from tests.fakes import FakeOpenAI

HELLO = [{"role": "user", "content": "hello"}]
BASE = {"model": "openai/gpt-4o", "messages": HELLO}
MISSING = object()
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def changed(**fields: Any) -> dict[str, Any]:
    body = dict(BASE)
    for k, v in fields.items():
        if v is MISSING:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def assert_openai_error(body: Any, param: str | None, code: str) -> None:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]


INVALID = [
    (changed(messages=MISSING), "messages"),
    (changed(messages=[]), "messages"),
    (changed(messages="hello"), "messages"),
    (changed(messages=["hello"]), "messages[0]"),
    (changed(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (changed(messages=[{"content": "x"}]), "messages[0].role"),
    (changed(messages=HELLO + [{"role": "user", "content": 5}]), "messages[1].content"),
    (changed(messages=[{"role": "user", "content": {"text": "x"}}]), "messages[0].content"),
    (changed(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    (changed(messages=[{"role": "user"}]), "messages[0].content"),
    (changed(messages=[{"role": "user", "content": [{"text": "no type"}]}]),
     "messages[0].content[0]"),
    (changed(messages=[{"role": "user", "content": ["plain"]}]), "messages[0].content[0]"),
    (changed(messages=HELLO + [{"role": "tool", "content": "61F"}]), "messages[1].tool_call_id"),
    (changed(messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]),
     "messages[0].tool_calls[0].function"),
    (changed(model=5), "model"),
    (changed(temperature=2.5), "temperature"),
    (changed(temperature=-0.1), "temperature"),
    (changed(temperature="1"), "temperature"),
    (changed(temperature=True), "temperature"),
    (changed(top_p=1.01), "top_p"),
    (changed(top_p=-1), "top_p"),
    (changed(presence_penalty=-2.1), "presence_penalty"),
    (changed(frequency_penalty=3), "frequency_penalty"),
    (changed(max_tokens=0), "max_tokens"),
    (changed(max_tokens=-5), "max_tokens"),
    (changed(max_tokens=1.5), "max_tokens"),
    (changed(max_tokens="10"), "max_tokens"),
    (changed(max_completion_tokens=0), "max_completion_tokens"),
    (changed(max_completion_tokens=False), "max_completion_tokens"),
    (changed(stop=["a", "b", "c", "d", "e"]), "stop"),
    (changed(stop=[1]), "stop"),
    (changed(stop=7), "stop"),
    (changed(n=0), "n"),
    (changed(n="2"), "n"),
    (changed(stream="true"), "stream"),
    (changed(stream=1), "stream"),
    (changed(tools={"type": "function"}), "tools"),
    (changed(tools=[{"function": {"name": "f"}}]), "tools[0]"),
    (changed(tools=[{"type": "function"}]), "tools[0].function.name"),
    (changed(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name"),
    (changed(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
     "tools[0].function.parameters"),
]


@pytest.mark.parametrize("body, param", INVALID, ids=[p for _, p in INVALID])
async def test_invalid_request(fake: FakeOpenAI, gw: Any, body: dict[str, Any], param: str) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=body)
    assert resp.status == 400
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-request-id"]
    assert_openai_error(await resp.json(), param, "invalid_request")
    assert fake.requests == []


VALID = [
    changed(temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2),
    changed(temperature=2.0, top_p=0.0, max_tokens=1, max_completion_tokens=1, n=2),
    changed(stop="END"),
    changed(stop=["a", "b", "c", "d"]),
    changed(stream=False, tools=[TOOL], tool_choice="auto"),
    changed(messages=[{"role": "developer", "content": "be brief"},
                      {"role": "system", "content": [{"type": "text", "text": "hi"}]},
                      {"role": "user", "content": [
                          {"type": "text", "text": "what is this?"},
                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": "{}"}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "61F"}]),
]


@pytest.mark.parametrize("body", VALID)
async def test_valid_edges_reach_upstream(fake: FakeOpenAI, gw: Any, body: dict[str, Any]) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=body)
    assert resp.status == 200, await resp.text()
    assert fake.last.json == {**body, "model": "gpt-4o-2024-08-06"}


async def test_malformed_json(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", data=b'{"model": "openai/gpt-4o", "messages": [',
                         headers={**auth(KEY_ALL), "content-type": "application/json"})
    assert resp.status == 400
    assert_openai_error(await resp.json(), None, "invalid_json")
    assert fake.requests == []


async def test_body_that_is_not_an_object(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", json=[BASE], headers=auth(KEY_ALL))
    assert resp.status == 400
    assert_openai_error(await resp.json(), "body", "invalid_request")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type(fake: FakeOpenAI, gw: Any, ctype: str | None) -> None:
    headers = auth(KEY_ALL)
    if ctype:
        headers["content-type"] = ctype
    resp = await gw.post("/v1/chat/completions", data=b'{"model": "openai/gpt-4o"}',
                         headers=headers, skip_auto_headers=["Content-Type"])
    assert resp.status == 400
    assert_openai_error(await resp.json(), None, "unsupported_content_type")
    assert fake.requests == []


async def test_json_content_type_with_charset_is_accepted(fake: FakeOpenAI, gw: Any) -> None:
    from gateway.types import dumps

    resp = await gw.post("/v1/chat/completions", data=dumps(BASE), headers={
        **auth(KEY_ALL), "content-type": "application/json; charset=utf-8"})
    assert resp.status == 200


def big_body() -> bytes:
    from gateway.types import dumps

    filler = "x" * (1024 * 1024 + 10)  # max_body_mb is 1 in base_config
    return dumps(changed(messages=[{"role": "user", "content": filler}]))


async def test_body_over_max_body_mb_is_413(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", data=big_body(),
                         headers={**auth(KEY_ALL), "content-type": "application/json"})
    assert resp.status == 413
    body = await resp.json()
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_body_mb" in body["error"]["message"]
    assert resp.headers["x-request-id"]
    assert fake.requests == []


async def test_413_names_a_fractional_limit(fake: FakeOpenAI, make_gateway: Any) -> None:
    from tests.core.support import base_config

    data = base_config(fake.base_url)
    data["server"]["max_body_mb"] = 0.5
    client = await make_gateway(data)
    resp = await client.post("/v1/chat/completions", data=big_body(),
                             headers={**auth(KEY_ALL), "content-type": "application/json"})
    assert resp.status == 413
    assert "(0.5 MiB)" in (await resp.json())["error"]["message"]


async def test_wrong_method_is_an_openai_shaped_405(gw: Any) -> None:
    resp = await gw.get("/v1/chat/completions", headers=auth(KEY_ALL))
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


async def test_chunked_body_over_max_body_mb_is_413(fake: FakeOpenAI, gw: Any) -> None:
    data = big_body()

    async def pieces() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    resp = await gw.post("/v1/chat/completions", data=pieces(),
                         headers={**auth(KEY_ALL), "content-type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    assert fake.requests == []


async def test_unknown_fields_pass_through_unchanged(fake: FakeOpenAI, gw: Any) -> None:
    body = changed(seed=7, logit_bias={"50256": -100}, metadata={"team": "x", "n": [1, 2]},
                   reasoning_effort="low", user="user-1", prompt_cache_key="pc",
                   response_format={"type": "json_object"},
                   x_vendor_flag={"nested": [True, None, 1.5]}, parallel_tool_calls=False)
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=body)
    assert resp.status == 200
    assert fake.last.json == {**body, "model": "gpt-4o-2024-08-06"}


async def test_observability_field_is_not_sent_upstream(fake: FakeOpenAI, gw: Any) -> None:
    body = changed(observability=True, seed=1)
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=body)
    assert resp.status == 200
    assert fake.last.json == {"model": "gpt-4o-2024-08-06", "messages": HELLO, "seed": 1}
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL),
                         json=changed(observability=True, stream=True))
    assert resp.status == 200
    await resp.read()
    assert "observability" not in fake.last.json and fake.last.json["stream"] is True
    resp = await gw.post("/v1/embeddings", headers=auth(KEY_ALL), json={
        "model": "openai/text-embedding-3-small", "input": "hi", "observability": True})
    assert resp.status == 200
    assert fake.last.json == {"model": "text-embedding-3-small", "input": "hi"}


@pytest.mark.parametrize("body, param", [
    ({"model": "openai/text-embedding-3-small"}, "input"),
    ({"model": "openai/text-embedding-3-small", "input": ""}, "input"),
    ({"model": "openai/text-embedding-3-small", "input": []}, "input"),
    ({"model": "openai/text-embedding-3-small", "input": "x", "encoding_format": "hex"},
     "encoding_format"),
    ({"model": "openai/text-embedding-3-small", "input": "x", "dimensions": 0}, "dimensions"),
])
async def test_invalid_embeddings(fake: FakeOpenAI, gw: Any, body: dict[str, Any],
                                  param: str) -> None:
    resp = await gw.post("/v1/embeddings", headers=auth(KEY_ALL), json=body)
    assert resp.status == 400
    assert_openai_error(await resp.json(), param, "invalid_request")
    assert fake.requests == []


def test_validation_keeps_the_body_and_reads_the_model() -> None:
    req = chat_request(changed(stream=True, custom=1), "fast")
    assert req.model == "openai/gpt-4o" and req.stream is True and req.body["custom"] == 1
    assert chat_request(changed(model=MISSING), "fast").model == "fast"
    with pytest.raises(InvalidRequest) as info:
        chat_request(changed(model=MISSING), "")
    assert info.value.param == "model"
