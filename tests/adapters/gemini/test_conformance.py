"""Every shared conformance case through the Gemini adapter: the exact upstream request (URL,
headers, JSON body) and the translated answer to a representative Gemini response."""
from __future__ import annotations

import re
from typing import Any

import pytest

from adapters.gemini import ADAPTER
from gateway.sse import replay
from gateway.types import JSON, dumps
from tests.adapters.conformance import CASES, PNG_DATA_URL
from tests.adapters.gemini.helpers import (
    API_KEY,
    BASE,
    MODEL,
    chat,
    raw,
    target,
    upstream_body,
)

WEATHER = {"name": "get_weather", "description": "Get current weather for a location",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                          "required": ["location"]}}
TOOLS = [{"functionDeclarations": [WEATHER]}]


def _user(text: str) -> JSON:
    return {"role": "user", "parts": [{"text": text}]}


def _tools(mode: str | None, names: list[str] | None = None) -> JSON:
    out: JSON = {"contents": [_user("Weather in Paris?")], "tools": TOOLS}
    if mode:
        config: JSON = {"mode": mode}
        if names:
            config["allowedFunctionNames"] = names
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


EXPECTED: dict[str, JSON] = {
    "basic": {"contents": [_user("Hello!")]},
    "system_and_sampling": {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
        "contents": [_user("Hi")],
        "generationConfig": {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 100,
                             "stopSequences": ["END", "STOP"]},
    },
    "multi_turn_merge": {"contents": [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}]},
        _user("four")]},
    "tools_auto": _tools("AUTO"),
    "tools_required": _tools("ANY"),
    "tools_named": _tools("ANY", ["get_weather"]),
    "tools_none": _tools("NONE"),
    "tool_round_trip": {"tools": TOOLS, "contents": [
        _user("Weather in Paris and Rome?"),
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"location": "Rome"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": {"temp_c": 18}}}},
            {"functionResponse": {"name": "get_weather",
                                  "response": {"output": {"temp_c": 24}}}}]}]},
    "image_data_url": {"contents": [{"role": "user", "parts": [
        {"text": "What is in this image?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG_DATA_URL.split(",", 1)[1]}}]}]},
    "image_https_url": {"contents": [{"role": "user", "parts": [
        {"text": "What is in this image?"},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo.jpg"}}]}]},
    "json_object": {"contents": [_user("Reply in JSON.")],
                    "generationConfig": {"responseMimeType": "application/json"}},
    "json_schema": {"contents": [_user("Weather in Tokyo")], "generationConfig": {
        "responseMimeType": "application/json",
        "responseJsonSchema": CASES["json_schema"]["response_format"]["json_schema"]["schema"]}},
    "streaming": {"contents": [_user("Hello!")]},
    "web_search": {"contents": [_user("Latest AI news this week")],
                   "tools": [{"googleSearch": {}}]},
}


def test_every_case_has_an_expectation() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_upstream_request(name: str) -> None:
    case = CASES[name]
    up = ADAPTER.build_request(chat(case), target())
    method = "streamGenerateContent?alt=sse" if case.get("stream") else "generateContent"
    assert up.method == "POST"
    assert up.url == f"{BASE}/{MODEL}:{method}"
    assert up.stream is bool(case.get("stream"))
    assert up.headers == {"content-type": "application/json", "x-goog-api-key": API_KEY}
    assert API_KEY not in up.url
    assert upstream_body(up) == EXPECTED[name]


# ---------------------------------------------------------------- translated responses

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 6, "totalTokenCount": 18}


def _answer(parts: list[JSON], reason: str = "STOP", **cand: Any) -> JSON:
    return {"candidates": [{"content": {"parts": parts, "role": "model"},
                            "finishReason": reason, "index": 0, **cand}],
            "usageMetadata": USAGE, "modelVersion": MODEL, "responseId": "resp-1"}


CALL = {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}
JSON_TEXT = '{"location":"Tokyo","temperature":21}'
GROUNDING = {
    "webSearchQueries": ["AI news"],
    "groundingChunks": [{"web": {"uri": "https://news.example/a", "title": "news.example"}}],
    "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": 9, "text": "AI moved."},
                           "groundingChunkIndices": [0]}]}

RESPONSES: dict[str, tuple[JSON, str, str | None]] = {  # upstream, finish_reason, content
    "basic": (_answer([{"text": "Hi there."}]), "stop", "Hi there."),
    "system_and_sampling": (_answer([{"text": "Hello"}], "MAX_TOKENS"), "length", "Hello"),
    "multi_turn_merge": (_answer([{"text": "five"}]), "stop", "five"),
    "tools_auto": (_answer([{"text": "Checking."}, CALL]), "tool_calls", "Checking."),
    "tools_required": (_answer([CALL]), "tool_calls", None),
    "tools_named": (_answer([CALL]), "tool_calls", None),
    "tools_none": (_answer([{"text": "I cannot check."}]), "stop", "I cannot check."),
    "tool_round_trip": (_answer([{"text": "Paris 18, Rome 24."}]), "stop", "Paris 18, Rome 24."),
    "image_data_url": (_answer([{"text": "A pixel."}]), "stop", "A pixel."),
    "image_https_url": (_answer([{"text": "A photo."}], "SAFETY"), "content_filter", "A photo."),
    "json_object": (_answer([{"text": JSON_TEXT}]), "stop", JSON_TEXT),
    "json_schema": (_answer([{"text": JSON_TEXT}]), "stop", JSON_TEXT),
    "streaming": (_answer([{"text": "Hi!"}]), "stop", "Hi!"),
    "web_search": (_answer([{"text": "AI moved. More soon."}], groundingMetadata=GROUNDING),
                   "stop", "AI moved. More soon."),
}


def test_every_case_has_a_response() -> None:
    assert set(RESPONSES) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_translated_response(name: str) -> None:
    upstream, finish, content = RESPONSES[name]
    req = chat(CASES[name])
    resp = ADAPTER.parse_response(raw(upstream), req, target())
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == content
    assert choice["message"]["role"] == "assistant"
    assert resp.body["usage"] == {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
                                  "prompt_tokens_details": {"cached_tokens": 0},
                                  "completion_tokens_details": {"reasoning_tokens": 0}}
    assert resp.usage is not None and resp.usage.total_tokens == 18
    calls = choice["message"].get("tool_calls")
    if finish == "tool_calls":
        assert calls is not None and len(calls) == 1
        assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0]["id"])
        assert calls[0]["type"] == "function"
        assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    else:
        assert calls is None
    if name == "web_search":
        assert choice["message"]["annotations"] == [{"type": "url_citation", "url_citation": {
            "start_index": 0, "end_index": 9, "url": "https://news.example/a",
            "title": "news.example"}}]


@pytest.mark.parametrize("name", sorted(CASES))
def test_streamed_response(name: str) -> None:
    """The same answers streamed as two SSE events give the same content and finish reason."""
    upstream, finish, content = RESPONSES[name]
    first = {**upstream, "candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                         "index": 0}]}
    raw_sse = b"data: " + dumps(first) + b"\n\ndata: " + dumps(upstream) + b"\n\n"
    decoder = ADAPTER.stream_decoder(chat({**CASES[name], "stream": True}), target())
    events = [e for sse in replay(raw_sse, 7) for e in decoder.feed(sse)] + decoder.close()
    deltas = [e.chunk["choices"][0] for e in events if e.chunk["choices"]]
    assert deltas[0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(d["delta"].get("content") or "" for d in deltas)
    assert text == (content or "")
    assert [d["finish_reason"] for d in deltas if d["finish_reason"]] == [finish]
    assert events[-1].usage_only and events[-1].chunk == {
        "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
                                 "prompt_tokens_details": {"cached_tokens": 0},
                                 "completion_tokens_details": {"reasoning_tokens": 0}}}
    calls = [c for d in deltas for c in d["delta"].get("tool_calls") or []]
    assert len(calls) == (1 if finish == "tool_calls" else 0)

