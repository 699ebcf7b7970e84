"""Every shared conformance case through the Anthropic adapter: the exact upstream body, and the
translated answer for representative upstream responses."""
from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import ADAPTER
from tests.adapters.anthropic.helpers import chat, raw, target, upstream_body
from tests.adapters.conformance import CASES, PNG_DATA_URL

MODEL = "claude-sonnet-4-5"
WEATHER = {"name": "get_weather", "description": "Get current weather for a location",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}


def _base(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 4096, **extra}


EXPECTED: dict[str, dict[str, Any]] = {
    "basic": _base(messages=[{"role": "user", "content": "Hello!"}]),
    "system_and_sampling": {
        "model": MODEL, "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."},
                   {"type": "text", "text": "Answer in English."}],
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
    },
    "multi_turn_merge": _base(messages=[
        {"role": "user", "content": [{"type": "text", "text": "one"},
                                     {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"}]),
    "tools_auto": _base(messages=[{"role": "user", "content": "Weather in Paris?"}],
                        tools=[WEATHER], tool_choice={"type": "auto"}),
    "tools_required": _base(messages=[{"role": "user", "content": "Weather in Paris?"}],
                            tools=[WEATHER],
                            tool_choice={"type": "any", "disable_parallel_tool_use": True}),
    "tools_named": _base(messages=[{"role": "user", "content": "Weather in Paris?"}],
                         tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}),
    "tools_none": _base(messages=[{"role": "user", "content": "Weather in Paris?"}],
                        tools=[WEATHER], tool_choice={"type": "none"}),
    "tool_round_trip": _base(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"location": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "{\"temp_c\":18}"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "{\"temp_c\":24}"}]}]),
    "image_data_url": _base(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG_DATA_URL.split(",", 1)[1]}}]}]),
    "image_https_url": _base(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/photo.jpg"}}]}]),
    "json_object": _base(
        messages=[{"role": "user", "content": "Reply in JSON."}],
        system="Respond with a single valid JSON object only: no prose before or after it and "
               "no markdown code fences."),
    "json_schema": _base(
        messages=[{"role": "user", "content": "Weather in Tokyo"}],
        output_config={"format": {"type": "json_schema", "schema": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "temperature": {"type": "number"}},
            "required": ["location", "temperature"], "additionalProperties": False}}}),
    "streaming": _base(messages=[{"role": "user", "content": "Hello!"}], stream=True),
    "web_search": _base(messages=[{"role": "user", "content": "Latest AI news this week"}],
                        tools=[{"type": "web_search_20250305", "name": "web_search"}]),
}


def test_every_case_has_an_expected_body() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_upstream_body(name: str) -> None:
    assert upstream_body(CASES[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_line_and_headers(name: str) -> None:
    req = ADAPTER.build_request(chat(CASES[name]), target())
    assert (req.method, req.url) == ("POST", "https://api.anthropic.com/v1/messages")
    assert req.headers == {"x-api-key": "sk-ant-secret-never-logged",
                           "anthropic-version": "2023-06-01",
                           "content-type": "application/json"}
    assert req.stream is bool(CASES[name].get("stream"))


# ---------------------------------------------------------------- responses

USAGE = {"input_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100,
         "output_tokens": 12}
OPENAI_USAGE = {"prompt_tokens": 125, "completion_tokens": 12, "total_tokens": 137,
                "prompt_tokens_details": {"cached_tokens": 100},
                "completion_tokens_details": {"reasoning_tokens": 0}}


def _message(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop, "stop_sequence": None, "usage": USAGE}


RESPONSES: dict[str, tuple[list[dict[str, Any]], str, dict[str, Any], str]] = {
    "basic": ([{"type": "text", "text": "Hi there!"}], "end_turn",
              {"role": "assistant", "content": "Hi there!"}, "stop"),
    "system_and_sampling": ([{"type": "text", "text": "Hello"}], "stop_sequence",
                            {"role": "assistant", "content": "Hello"}, "stop"),
    "tools_required": (
        [{"type": "tool_use", "id": "toolu_01", "name": "get_weather",
          "input": {"location": "Paris"}}], "tool_use",
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_01", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
        "tool_calls"),
    "json_schema": ([{"type": "text", "text": "{\"location\":\"Tokyo\",\"temperature\":21}"}],
                    "end_turn",
                    {"role": "assistant", "content": "{\"location\":\"Tokyo\",\"temperature\":21}"},
                    "stop"),
    "json_object": ([{"type": "text", "text": "```json\n{\"ok\": true}\n```"}], "end_turn",
                    {"role": "assistant", "content": "{\"ok\": true}"}, "stop"),
    "basic_truncated": ([{"type": "text", "text": "Hel"}], "max_tokens",
                        {"role": "assistant", "content": "Hel"}, "length"),
    "web_search": (
        [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
          "input": {"query": "AI news"}},
         {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
         {"type": "text", "text": "Models got better. "},
         {"type": "text", "text": "A lot.", "citations": [
             {"type": "web_search_result_location", "url": "https://ex.com/a", "title": "A",
              "encrypted_index": "x", "cited_text": "better"}]}], "end_turn",
        {"role": "assistant", "content": "Models got better. A lot.", "annotations": [
            {"type": "url_citation", "url_citation": {"start_index": 19, "end_index": 25,
                                                      "url": "https://ex.com/a", "title": "A"}}]},
        "stop"),
}


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_translated_response(name: str) -> None:
    content, stop, message, finish = RESPONSES[name]
    case = CASES[name.removesuffix("_truncated")]
    resp = ADAPTER.parse_response(raw(200, _message(content, stop)), chat(case), target())
    assert resp.body == {"object": "chat.completion", "choices": [
        {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": OPENAI_USAGE}
    assert resp.usage is not None and resp.usage.total_tokens == 137
