"""The fake Anthropic upstream, checked with the official `anthropic` SDK and with our adapter."""
from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from adapters.anthropic import ADAPTER
from gateway.errors import UpstreamRateLimited, UpstreamUnavailable
from gateway.mockserver.anthropic import create_app
from gateway.sse import SSEReader
from gateway.types import RawResponse, StreamEvent
from tests.adapters.anthropic.helpers import chat, target
from tests.adapters.conformance import CASES

MODEL = "claude-sonnet-4-5"
WEATHER = {"name": "get_weather", "description": "Weather",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}
TOOLS: Any = [WEATHER]


@pytest.fixture
async def server(aiohttp_server: Any) -> TestServer:
    return await aiohttp_server(create_app(chunk_words=1))  # type: ignore[no-any-return]


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key="sk-test", base_url=str(server.make_url("")),
                                   max_retries=0)
    yield sdk
    await sdk.close()


async def test_sdk_non_streaming_echo(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(model=MODEL, max_tokens=50,
                                       messages=[{"role": "user", "content": "hello there"}])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Echo: hello there"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 3
    assert msg.usage.input_tokens > 0 and msg.id.startswith("msg_")


async def test_sdk_streaming_text_matches(client: anthropic.AsyncAnthropic) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 50,
                              "messages": [{"role": "user", "content": "one two three"}]}
    async with client.messages.stream(**kwargs) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == ["Echo: ", "one ", "two ", "three"]
    plain = await client.messages.create(**kwargs)
    texts = [getattr(b, "text", None) for b in final.content]
    assert texts == [getattr(b, "text", None) for b in plain.content]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens == 4


async def test_sdk_streaming_tool_use(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
            model=MODEL, max_tokens=200, tools=TOOLS,
            messages=[{"role": "user", "content": "What's the weather in Paris?"}]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use"
    tool = final.content[-1]
    assert tool.type == "tool_use" and tool.name == "get_weather"
    assert tool.input == {"location": "Paris"} and tool.id.startswith("toolu_")


async def test_sdk_tool_result_and_forced_tool(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "get_weather", "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "18C"}]}])
    assert msg.content[0].text == "Tool results: 18C"
    forced = await client.messages.create(
        model=MODEL, max_tokens=100, tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "hi Rome"}])
    assert forced.stop_reason == "tool_use"
    assert forced.content[-1].input == {"location": "Rome"}


async def test_sdk_limits_json_output_and_web_search(client: anthropic.AsyncAnthropic) -> None:
    cut = await client.messages.create(model=MODEL, max_tokens=2,
                                       messages=[{"role": "user", "content": "a b c d"}])
    assert (getattr(cut.content[0], "text"), cut.stop_reason) == ("Echo: a", "max_tokens")
    stopped = await client.messages.create(model=MODEL, max_tokens=50, stop_sequences=["c"],
                                           messages=[{"role": "user", "content": "a b c d"}])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "c")
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "temp": {"type": "number"}}}
    js = await client.messages.create(model=MODEL, max_tokens=50,
                                      output_config={"format": {"type": "json_schema",
                                                                "schema": schema}},
                                      messages=[{"role": "user", "content": "Weather Oslo"}])
    assert js.content[0].text == '{"city":"Oslo","temp":21}'
    async with client.messages.stream(
            model=MODEL, max_tokens=50,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "AI news"}]) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "server_tool_use",
                                               "web_search_tool_result", "text"]
    cited = final.content[-1]
    citations = getattr(cited, "citations")
    assert citations and citations[0].url == "https://example.com/news/ai-news"
    assert final.usage.server_tool_use and final.usage.server_tool_use.web_search_requests == 1


async def test_sdk_models_list(client: anthropic.AsyncAnthropic) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data][:2] == ["claude-sonnet-4-5", "claude-haiku-4-5"]


async def test_sdk_sees_anthropic_errors(aiohttp_server: Any,
                                         client: anthropic.AsyncAnthropic) -> None:
    failing = await aiohttp_server(create_app(fail_rate=1.0))
    sdk = anthropic.AsyncAnthropic(api_key="k", base_url=str(failing.make_url("")), max_retries=0)
    with pytest.raises(anthropic.OverloadedError) as over:
        await sdk.messages.create(model=MODEL, max_tokens=5,
                                  messages=[{"role": "user", "content": "x"}])
    assert over.value.status_code == 529
    await sdk.close()
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model=MODEL, max_tokens=5, extra_headers={
            "x-mock-error": "rate_limit_error"}, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await client.messages.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                     max_tokens=0)


async def test_missing_key_or_field(server: TestServer) -> None:
    url = server.make_url("/v1/messages")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={}) as resp:
            body = await resp.json()
        assert resp.status == 401 and body["error"]["type"] == "authentication_error"
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        async with session.post(url, headers=headers, json={
                "model": MODEL, "messages": [{"role": "user", "content": "x"}]}) as resp:
            body = await resp.json()
    assert resp.status == 400 and body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error",
                             "message": "max_tokens: Field required"}


# ---------------------------------------------------------------- our adapter against the mock


async def _call(server: TestServer, body: dict[str, Any], headers: dict[str, str] | None = None,
                ) -> tuple[RawResponse | None, list[StreamEvent]]:
    tgt = target(base_url=str(server.make_url("")))
    req = ADAPTER.build_request(chat(body), tgt)
    async with aiohttp.ClientSession() as session:
        async with session.request(req.method, req.url, data=req.body,
                                   headers={**req.headers, **(headers or {})}) as resp:
            if not req.stream or resp.status != 200:
                return RawResponse(resp.status, dict(resp.headers), await resp.read()), []
            decoder = ADAPTER.stream_decoder(chat(body), tgt)
            reader = SSEReader()
            events: list[StreamEvent] = []
            async for piece in resp.content.iter_any():
                for sse in reader.feed(piece):
                    events += decoder.feed(sse)
            for sse in reader.close():
                events += decoder.feed(sse)
            return None, events + decoder.close()


async def test_adapter_round_trip_tools(server: TestServer) -> None:
    raw_resp, _ = await _call(server, CASES["tools_required"])
    assert raw_resp is not None
    resp = ADAPTER.parse_response(raw_resp, chat(CASES["tools_required"]), target())
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}
    assert resp.usage is not None and resp.usage.prompt_tokens > 0


async def test_adapter_round_trip_stream_tools(server: TestServer) -> None:
    body = {**CASES["tools_auto"], "stream": True}
    _, events = await _call(server, body)
    calls = [tc for e in events for c in e.chunk["choices"]
             for tc in c["delta"].get("tool_calls", [])]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == "{\"location\":\"Paris\"}"
    assert events[-2].chunk["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1].usage_only and events[-1].usage is not None


async def test_adapter_round_trip_json_schema_and_web_search(server: TestServer) -> None:
    raw_resp, _ = await _call(server, CASES["json_schema"])
    assert raw_resp is not None
    msg = ADAPTER.parse_response(raw_resp, chat(CASES["json_schema"]), target()).body
    assert msg["choices"][0]["message"]["content"] == '{"location":"Tokyo","temperature":21}'
    _, events = await _call(server, {**CASES["web_search"], "stream": True})
    text = "".join(c["delta"].get("content", "") for e in events for c in e.chunk["choices"])
    notes = [a for e in events for c in e.chunk["choices"]
             for a in c["delta"].get("annotations", [])]
    assert text.startswith("Let me search for that.Here is what I found")
    span = notes[0]["url_citation"]
    assert text[span["start_index"]:span["end_index"]] == (
        "Here is what I found about Latest AI news this week.")


async def test_adapter_maps_mock_errors(server: TestServer) -> None:
    raw_resp, _ = await _call(server, CASES["basic"], {"x-mock-error": "rate_limit_error"})
    assert raw_resp is not None
    err = ADAPTER.parse_error(raw_resp, target())
    assert isinstance(err, UpstreamRateLimited) and err.retry_after_s == 1.0
    with pytest.raises(UpstreamUnavailable, match="overloaded_error"):
        await _call(server, CASES["streaming"], {"x-mock-stream-error": "overloaded_error"})
