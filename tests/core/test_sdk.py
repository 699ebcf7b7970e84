"""The official `openai` SDK as the client of the gateway (which talks to the fake upstream)."""
from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.core.support import KEY_A, KEY_ALL
from tests.fakes import (FakeOpenAI, Reply, Stream, completion, text_stream, tool_call,
                         tool_call_stream)

MESSAGES: Any = [{"role": "developer", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Hello!"}]
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}


def sdk(gw: Any, key: str = KEY_ALL) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(gw.make_url("/v1")), api_key=key, max_retries=0, timeout=10)


async def test_sdk_completion(fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Reply(200, completion("Hello! How can I help?", usage=(19, 6))))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="openai/gpt-4o", messages=MESSAGES, temperature=0.5)
        result = raw.parse()
    assert raw.headers["x-modelyard-provider"] == "fakeai"
    assert raw.headers["x-request-id"]
    assert result.model == "openai/gpt-4o"
    assert result.choices[0].message.content == "Hello! How can I help?"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens == 25
    sent = fake.last
    assert sent.json == {"model": "gpt-4o-2024-08-06", "messages": MESSAGES, "temperature": 0.5}
    assert sent.headers["authorization"] == "Bearer sk-upstream-provider-77aa55"


async def test_sdk_tool_call_completion(fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Reply(200, completion(None, tool_calls=[
        tool_call("get_weather", '{"city": "Boston"}', id="call_abc123")])))
    async with sdk(gw) as client:
        result = await client.chat.completions.create(
            model="fast", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required")
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.id == "call_abc123" and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Boston"}  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    assert result.model == "fast"
    assert fake.last.json["tools"] == [WEATHER_TOOL]
    assert fake.last.json["tool_choice"] == "required"


async def test_sdk_stream(fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Stream(text_stream(["Hel", "lo", " world"], usage=(19, 3)), split=range(1, 8)))
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(
            model="openai/gpt-4o", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert {c.model for c in chunks} == {"openai/gpt-4o"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 19
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_sdk_stream_without_usage(fake: FakeOpenAI, gw: Any) -> None:
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=MESSAGES, stream=True)
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: Hello!"
    assert all(c.usage is None for c in chunks)
    assert fake.last.json["stream_options"] == {"include_usage": True}


async def test_sdk_tool_call_stream(fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Stream(tool_call_stream("get_weather", ['{"', 'city', '": "Edin', 'burgh"}'],
                                      call_id="call_c91"), split=range(1, 8)))
    async with sdk(gw) as client:
        async with client.chat.completions.stream(
                model="openai/gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL]) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
    message = final.choices[0].message
    assert final.model == "openai/gpt-4o"
    assert final.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("call_c91", "get_weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Edinburgh"}  # type: ignore[union-attr]


async def test_sdk_embeddings(fake: FakeOpenAI, gw: Any) -> None:
    async with sdk(gw, KEY_A) as client:
        result = await client.embeddings.create(model="openai/text-embedding-3-small",
                                                input=["alpha", "beta"])
    assert result.model == "openai/text-embedding-3-small"
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert fake.last.json["model"] == "text-embedding-3-small"
    assert fake.last.json["input"] == ["alpha", "beta"]
    assert fake.last.json["encoding_format"] == "base64"  # the SDK's own field, passed through


async def test_sdk_sees_openai_errors(fake: FakeOpenAI, gw: Any) -> None:
    async with sdk(gw, "sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as auth_err:
            await client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert auth_err.value.code == "invalid_api_key"
    async with sdk(gw, KEY_A) as client:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="other/model", messages=MESSAGES)
        assert denied.value.code == "model_not_allowed"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gtp-4o", messages=MESSAGES)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="fast", messages=MESSAGES, temperature=3)
        assert bad.value.param == "temperature"
        models = [m.id async for m in client.models.list()]
    assert models == ["openai/gpt-4o", "openai/gpt-4o-mini", "openai/text-embedding-3-small",
                      "fast"]
    assert fake.requests == []
