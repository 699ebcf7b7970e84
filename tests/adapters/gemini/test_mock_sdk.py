"""The fake Gemini upstream (gateway.mockserver.gemini), checked with the official google-genai
SDK (streaming and not, function calling, embeddings, models, errors) and driven through the
Gemini adapter (its requests are accepted; its translations read the mock's answers)."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from adapters.gemini import ADAPTER
from gateway.mockserver.gemini import create_app
from gateway.sse import SSEReader
from gateway.types import ChatRequest, RawResponse, StreamEvent, UpstreamRequest
from tests.adapters.conformance import CASES, WEATHER_TOOL
from tests.adapters.gemini.helpers import chat, target

MODEL = "gemini-2.5-flash"


@pytest.fixture
async def base_url(aiohttp_server: Any) -> str:
    server = await aiohttp_server(create_app(chunk_words=2))
    return f"http://127.0.0.1:{server.port}"


def client(base_url: str, key: str = "test-key") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))


NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Current weather",
    parameters_json_schema={"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]})])


async def test_sdk_generate_content(base_url: str) -> None:
    resp = await client(base_url).aio.models.generate_content(
        model=MODEL, contents="Hello there",
        config=types.GenerateContentConfig(system_instruction="Be kind", temperature=0.3))
    assert resp.text == "Echo: Hello there"
    assert resp.candidates and resp.candidates[0].finish_reason == types.FinishReason.STOP
    usage = resp.usage_metadata
    assert usage and usage.candidates_token_count == 3
    assert usage.total_token_count == usage.prompt_token_count + 3
    assert resp.response_id and resp.model_version == MODEL


async def test_sdk_stream(base_url: str) -> None:
    texts, reasons = [], []
    stream = await client(base_url).aio.models.generate_content_stream(
        model=MODEL, contents="one two three four five")
    async for chunk in stream:
        texts.append(chunk.text)
        reasons.append(chunk.candidates[0].finish_reason if chunk.candidates else None)
    assert "".join(texts) == "Echo: one two three four five"
    assert len(texts) == 3 and reasons[-1] == types.FinishReason.STOP and reasons[0] is None


async def test_sdk_function_calling_round_trip(base_url: str) -> None:
    c = client(base_url)
    config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    first = await c.aio.models.generate_content(model=MODEL, contents="Weather in Paris?",
                                                config=config)
    (call,) = first.function_calls or []
    assert call.name == "get_weather" and call.args == {"location": "Paris"}
    part = first.candidates[0].content.parts[0]  # type: ignore[index,union-attr]
    assert part.thought_signature  # bytes, decoded from base64 by the SDK
    history = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
               first.candidates[0].content,  # type: ignore[index]
               types.Content(role="user", parts=[types.Part.from_function_response(
                   name="get_weather", response={"output": {"temp_c": 18}})])]
    second = await c.aio.models.generate_content(model=MODEL, contents=history, config=config)
    assert second.text == 'Tool results: [{"output":{"temp_c":18}}]'


async def test_sdk_streamed_function_call(base_url: str) -> None:
    config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    calls = []
    stream = await client(base_url).aio.models.generate_content_stream(
        model=MODEL, contents="What is the weather in Rome?", config=config)
    async for chunk in stream:
        calls += chunk.function_calls or []
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"location": "Rome"})]


async def test_sdk_embeddings_and_models(base_url: str) -> None:
    c = client(base_url)
    emb = await c.aio.models.embed_content(model="gemini-embedding-001", contents=["a", "b"],
                                           config=types.EmbedContentConfig(output_dimensionality=8))
    assert emb.embeddings and [len(e.values or []) for e in emb.embeddings] == [8, 8]
    assert emb.embeddings[0].values != emb.embeddings[1].values
    names = [m.name async for m in await c.aio.models.list()]
    assert "models/gemini-2.5-flash" in names


async def test_sdk_sees_google_errors(base_url: str, aiohttp_server: Any) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        await client(base_url).aio.models.generate_content(model="nope", contents="x")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
    with pytest.raises(genai_errors.ClientError) as info:
        await client(base_url, key="invalid").aio.models.generate_content(model=MODEL,
                                                                           contents="x")
    assert info.value.code == 400 and "API key not valid" in str(info.value.message)
    failing = await aiohttp_server(create_app(fail_rate=1.0))
    with pytest.raises(genai_errors.ServerError) as err:
        await client(f"http://127.0.0.1:{failing.port}").aio.models.generate_content(
            model=MODEL, contents="x",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))))
    assert err.value.code == 503 and err.value.status == "UNAVAILABLE"


# ---------------------------------------------------------------- the adapter against the mock


async def send(session: aiohttp.ClientSession, up: UpstreamRequest,
               extra: dict[str, str] | None = None) -> RawResponse:
    async with session.request(up.method, up.url, headers={**up.headers, **(extra or {})},
                               data=up.body) as resp:
        return RawResponse(resp.status, dict(resp.headers), await resp.read())


async def stream(session: aiohttp.ClientSession, req: ChatRequest,
                 base_url: str) -> list[StreamEvent]:
    tgt = target(base_url=base_url)
    up = ADAPTER.build_request(req, tgt)
    decoder = ADAPTER.stream_decoder(req, tgt)
    reader = SSEReader()
    out: list[StreamEvent] = []
    async with session.post(up.url, headers=up.headers, data=up.body) as resp:
        assert resp.status == 200
        async for piece in resp.content.iter_chunked(7):
            for sse in reader.feed(piece):
                out += decoder.feed(sse)
    for sse in reader.close():
        out += decoder.feed(sse)
    return out + decoder.close()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_every_conformance_request_is_accepted_by_the_mock(base_url: str, name: str) -> None:
    req = chat(CASES[name])
    tgt = target(base_url=base_url)
    async with aiohttp.ClientSession() as session:
        if req.stream:
            events = await stream(session, req, base_url)
            assert events[-1].usage_only and events[-1].usage and events[-1].usage.prompt_tokens
            return
        raw = await send(session, ADAPTER.build_request(req, tgt))
    assert raw.status == 200, raw.body
    resp = ADAPTER.parse_response(raw, req, tgt)
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    choice = resp.body["choices"][0]
    if name in ("tools_required", "tools_named", "tools_auto"):
        assert choice["finish_reason"] == "tool_calls"
    if name == "web_search":
        assert choice["message"]["annotations"][0]["url_citation"]["url"].startswith("https://")
    if name == "image_data_url":
        assert choice["message"]["content"] == "Echo: What is in this image? [1 media parts]"


async def test_adapter_tool_loop_through_the_mock_keeps_the_signature(base_url: str) -> None:
    tgt = target(base_url=base_url)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    req = chat({"messages": messages, "tools": [WEATHER_TOOL]})
    async with aiohttp.ClientSession() as session:
        first = ADAPTER.parse_response(await send(session, ADAPTER.build_request(req, tgt)),
                                       req, tgt).body["choices"][0]["message"]
        (call,) = first["tool_calls"]
        assert call["id"].startswith("gcall_")  # the mock always signs its calls
        messages += [first, {"role": "tool", "tool_call_id": call["id"], "content": "{\"c\":18}"}]
        follow = chat({"messages": messages, "tools": [WEATHER_TOOL]})
        up = ADAPTER.build_request(follow, tgt)
        assert b"thoughtSignature" in (up.body or b"")
        answer = ADAPTER.parse_response(await send(session, up), follow, tgt)
    assert answer.body["choices"][0]["message"]["content"] == 'Tool results: [{"output":{"c":18}}]'


async def test_adapter_maps_mock_errors(base_url: str) -> None:
    tgt = target(base_url=base_url)
    req = chat({"messages": [{"role": "user", "content": "x"}]})
    async with aiohttp.ClientSession() as session:
        raw = await send(session, ADAPTER.build_request(req, tgt),
                         {"x-mock-error": "RESOURCE_EXHAUSTED"})
    err = ADAPTER.parse_error(raw, tgt)
    assert err.status == 429 and err.retry_after_s == 1.0
    assert err.message == "gemini (provider 'google') answered 429 RESOURCE_EXHAUSTED: mock " \
        "RESOURCE_EXHAUSTED"
