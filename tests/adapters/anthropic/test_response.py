"""Anthropic message -> OpenAI chat.completion: finish reasons, usage, content kinds."""
from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import ADAPTER
from gateway.errors import UpstreamProtocolError, UpstreamUnavailable
from gateway.types import ChatResponse
from tests.adapters.anthropic.helpers import chat, raw, target

REQ = {"messages": [{"role": "user", "content": "Hi"}]}

# PROVIDERS §2.7: the assembled non-streaming form of the §7.2 recorded stream.
RECORDED = {"id": "msg_019Q1hrJbZG26Fb9BQhrkHEr", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text",
                         "text": "I'll check the current weather in Paris for you."},
                        {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
                         "name": "get_weather", "input": {"location": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 65,
                      "service_tier": "standard"}}


def _parse(message: dict[str, Any], body: dict[str, Any] | None = None) -> ChatResponse:
    return ADAPTER.parse_response(raw(200, message), chat(body or REQ), target())


def test_recorded_tool_use_message() -> None:
    resp = _parse(RECORDED)
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": "I'll check the current weather in Paris for you.",
        "tool_calls": [{"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                        "function": {"name": "get_weather",
                                     "arguments": "{\"location\":\"Paris\"}"}}]}
    assert resp.body["usage"]["total_tokens"] == 442
    assert resp.usage is not None and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (
        377, 65)


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
    ("tool_use", "tool_calls"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("refusal", "content_filter"),
    ("some_future_reason", "stop"),
])
def test_finish_reasons(stop: str, finish: str) -> None:
    message = {**RECORDED, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert _parse(message).body["choices"][0]["finish_reason"] == finish


def test_usage_counts_cache_and_thinking() -> None:
    message = {**RECORDED, "usage": {"input_tokens": 3, "cache_creation_input_tokens": 1000,
                                     "cache_read_input_tokens": 2000, "output_tokens": 50,
                                     "output_tokens_details": {"thinking_tokens": 20}}}
    usage = _parse(message).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
            usage.reasoning_tokens, usage.total_tokens) == (3003, 2000, 50, 20, 3053)


def test_thinking_becomes_reasoning_content() -> None:
    message = {**RECORDED, "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xx"},
        {"type": "text", "text": "42"}]}
    assert _parse(message).body["choices"][0]["message"] == {
        "role": "assistant", "content": "42", "reasoning_content": "Let me think."}


def test_forced_json_tool_answer_is_content() -> None:
    body = {**REQ, "response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}}}}
    message = {**RECORDED, "content": [{"type": "tool_use", "id": "toolu_x",
                                        "name": "json_response", "input": {"a": [1, 2]}}]}
    choice = _parse(message, body).body["choices"][0]
    assert choice == {"index": 0, "message": {"role": "assistant", "content": "{\"a\":[1,2]}"},
                      "finish_reason": "stop", "logprobs": None}


def test_empty_answer_has_empty_string_content() -> None:
    message = {**RECORDED, "content": [], "stop_reason": "end_turn"}
    assert _parse(message).body["choices"][0]["message"] == {"role": "assistant", "content": ""}


def test_body_that_is_not_a_message_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="claude-main"):
        ADAPTER.parse_response(raw(200, b"<html>oops</html>"), chat(REQ), target())


def test_error_status_given_to_parse_response_is_mapped() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamUnavailable):
        ADAPTER.parse_response(raw(529, body), chat(REQ), target())
