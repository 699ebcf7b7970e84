"""End to end through the gateway with the official `openai` SDK as the client, against fake
Anthropic and Gemini upstreams speaking their own wire formats: text, streams, tools, images."""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

import pytest
from openai import AsyncOpenAI

from gateway.app import create_app
from gateway.config import parse_config
from gateway.mockserver import anthropic as anthropic_mock
from gateway.mockserver import gemini as gemini_mock
from tests.adapters.conformance import PNG_DATA_URL, WEATHER_TOOL

KEY = "sk-native-e2e-1"


@pytest.fixture
async def client(aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[AsyncOpenAI]:
    anth = await aiohttp_server(anthropic_mock.create_app())
    gem = await aiohttp_server(gemini_mock.create_app())
    cfg = parse_config(json.dumps({
        "auth": {"keys": [{"id": "e2e", "key": KEY}]},
        "providers": {
            "anthropic": {"adapter": "anthropic", "base_url": f"http://127.0.0.1:{anth.port}",
                          "api_key": "sk-ant-test"},
            "google": {"adapter": "gemini", "base_url": f"http://127.0.0.1:{gem.port}",
                       "api_key": "gem-test"},
        },
        "routes": {
            "anthropic/*": {"targets": [{"provider": "anthropic"}],
                            "defaults": {"max_tokens": 256}},
            "google/*": {"targets": [{"provider": "google"}]},
        },
        "retries": {"attempts": 1},
    }), env={})
    gw = await aiohttp_client(create_app(cfg))
    sdk = AsyncOpenAI(base_url=str(gw.make_url("/v1")), api_key=KEY, max_retries=0)
    yield sdk
    await sdk.close()


MODELS = ["anthropic/claude-sonnet-4-5", "google/gemini-2.5-flash"]


@pytest.mark.parametrize("model", MODELS)
async def test_text_completion(client: AsyncOpenAI, model: str) -> None:
    r = await client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hello there gateway"}])
    assert r.model == model
    assert r.choices[0].finish_reason == "stop"
    assert "gateway" in (r.choices[0].message.content or "")
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
async def test_stream_with_usage(client: AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream these few words back please"}])
    text, finish, usage = "", None, None
    async for chunk in stream:
        assert chunk.model == model
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "words" in text and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_tool_call_round_trip(client: AsyncOpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = await client.chat.completions.create(model=model, messages=messages,
                                             tools=[WEATHER_TOOL], tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    r2 = await client.chat.completions.create(model=model, messages=messages,
                                              tools=[WEATHER_TOOL])
    assert r2.choices[0].finish_reason in ("stop", "tool_calls")


@pytest.mark.parametrize("model", MODELS)
async def test_streamed_tool_call(client: AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(
        model=model, stream=True, tools=[WEATHER_TOOL], tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Rome?"}])
    args, name, ids, finish = "", "", set(), None
    async for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                assert tc.index == 0
                if tc.id:
                    ids.add(tc.id)
                name += (tc.function.name or "") if tc.function else ""
                args += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert name == "get_weather" and len(ids) == 1 and finish == "tool_calls"
    assert isinstance(json.loads(args), dict)


@pytest.mark.parametrize("model", MODELS)
async def test_image_input(client: AsyncOpenAI, model: str) -> None:
    r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe this image"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}])
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", MODELS)
async def test_json_schema_output(client: AsyncOpenAI, model: str) -> None:
    r = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather in Tokyo"}],
        response_format={"type": "json_schema", "json_schema": {
            "name": "weather", "schema": {"type": "object",
                                          "properties": {"location": {"type": "string"}},
                                          "required": ["location"]}}})
    data = json.loads(r.choices[0].message.content or "")
    assert isinstance(data, dict) and "location" in data


async def test_unsupported_parameter_is_a_400_naming_provider(client: AsyncOpenAI) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as info:
        await client.chat.completions.create(model=MODELS[0], temperature=1.5,
                                             messages=[{"role": "user", "content": "hi"}])
    assert "anthropic" in str(info.value) and "temperature" in str(info.value)
