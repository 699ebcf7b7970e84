"""Request translation details beyond the conformance cases: policy, defaults, merging, ids."""
from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import ADAPTER
from gateway.errors import InvalidRequest, UnsupportedParameter
from gateway.types import EmbeddingsRequest
from tests.adapters.anthropic.helpers import SECRET, chat, target, upstream_body

HI = [{"role": "user", "content": "Hi"}]


def test_route_default_max_tokens_and_client_value_wins() -> None:
    route = target(defaults={"max_tokens": 777})
    assert upstream_body({"messages": HI}, route)["max_tokens"] == 777
    body = {"messages": HI, "max_completion_tokens": 55}
    assert upstream_body(body, target(defaults={"max_tokens": 777}))["max_tokens"] == 55
    assert upstream_body({"messages": HI, "max_tokens": 9})["max_tokens"] == 9


def test_temperature_above_one_is_rejected_not_clamped() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        upstream_body({"messages": HI, "temperature": 1.5})
    assert info.value.status == 400 and info.value.param == "temperature"
    assert "claude-main" in info.value.message and "anthropic" in info.value.message
    dropped = upstream_body({"messages": HI, "temperature": 1.5}, target(drop=True))
    assert "temperature" not in dropped
    assert upstream_body({"messages": HI, "temperature": 1})["temperature"] == 1


@pytest.mark.parametrize(("param", "value"), [
    ("n", 2), ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logprobs", True),
    ("logit_bias", {"50256": -100}), ("seed", 7), ("top_logprobs", 3), ("store", True),
    ("service_tier", "flex"), ("reasoning_effort", "high"),
])
def test_unsupported_parameters_follow_the_route_policy(param: str, value: Any) -> None:
    body = {"messages": HI, param: value}
    with pytest.raises(UnsupportedParameter) as info:
        upstream_body(body)
    assert info.value.param == param and "claude-main" in info.value.message
    assert upstream_body(body, target(drop=True)) == {
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": HI}


@pytest.mark.parametrize(("param", "value"), [
    ("n", 1), ("presence_penalty", 0), ("logprobs", False), ("service_tier", "auto"),
    ("stream_options", {"include_usage": True}), ("parallel_tool_calls", True),
])
def test_neutral_values_are_accepted(param: str, value: Any) -> None:
    assert upstream_body({"messages": HI, param: value})["messages"] == HI


def test_observability_is_never_sent() -> None:
    body = upstream_body({"messages": HI, "observability": True})
    assert "observability" not in body


def test_headers_url_and_secret_handling() -> None:
    tgt = target(base_url="http://127.0.0.1:9999/", headers={"anthropic-beta": "x-2025"})
    req = ADAPTER.build_request(chat({"messages": HI}), tgt)
    assert req.url == "http://127.0.0.1:9999/v1/messages"
    assert req.headers["anthropic-beta"] == "x-2025"
    assert req.headers["x-api-key"] == SECRET
    assert SECRET not in repr(tgt) and SECRET not in repr(ADAPTER)
    assert ADAPTER.build_request(chat({"messages": HI}), target(
        base_url="https://proxy.example/v1")).url == "https://proxy.example/v1/messages"


def test_stop_string_user_and_top_k() -> None:
    body = upstream_body({"messages": HI, "stop": "END", "safety_identifier": "h1", "top_k": 5})
    assert (body["stop_sequences"], body["metadata"], body["top_k"]) == (
        ["END"], {"user_id": "h1"}, 5)


def test_tool_results_then_user_text_share_one_turn_results_first() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [
            {"id": "functions.search:0", "type": "function",
             "function": {"name": "search", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "functions.search:0",
         "content": [{"type": "text", "text": "found"}]},
        {"role": "user", "content": "thanks"},
        {"role": "system", "content": "late system note"},
    ]
    body = upstream_body({"messages": messages})
    assert body["system"] == "late system note"
    assert body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "functions_search_0", "name": "search", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "functions_search_0",
             "content": [{"type": "text", "text": "found"}]},
            {"type": "text", "text": "thanks"}]},
    ]


def test_empty_and_whitespace_text_is_dropped() -> None:
    body = upstream_body({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "  "},
        {"role": "user", "content": [{"type": "text", "text": ""},
                                     {"type": "text", "text": "b"}]}]})
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_cache_control_on_parts_is_kept() -> None:
    part = {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    body = upstream_body({"messages": [{"role": "system", "content": [part]},
                                       {"role": "user", "content": "q"}]})
    assert body["system"] == [part]


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "f", "arguments": "{not json"}}]}, "messages[1].tool_calls[0].function.arguments"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/bmp;base64,AAAA"}}]}, "messages[1].content[0]"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "AAAA", "format": "wav"}}]}, "messages[1].content[0]"),
    ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
    ({"role": "function", "name": "f", "content": "x"}, "messages[1].role"),
])
def test_untranslatable_messages_are_400s(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        upstream_body({"messages": [{"role": "user", "content": "q"}, message]})
    assert info.value.status == 400 and info.value.param == param


def test_pdf_file_part_becomes_a_document_block() -> None:
    body = upstream_body({"messages": [{"role": "user", "content": [{"type": "file", "file": {
        "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}]})
    assert body["messages"][0]["content"] == [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]


FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def test_parallel_tool_calls_false_without_tool_choice() -> None:
    body = upstream_body({"messages": HI, "tools": [FN], "parallel_tool_calls": False})
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    no_tools = upstream_body({"messages": HI, "tool_choice": "auto", "parallel_tool_calls": False})
    assert "tool_choice" not in no_tools and "tools" not in no_tools


def test_allowed_tools_filters_and_strict_is_kept() -> None:
    g = {"type": "function", "function": {"name": "g", "strict": True}}
    body = upstream_body({"messages": HI, "tools": [FN, g], "tool_choice": {
        "type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
            {"type": "function", "function": {"name": "g"}}]}}})
    assert body["tools"] == [{"name": "g", "input_schema": {"type": "object", "properties": {}},
                              "strict": True}]
    assert body["tool_choice"] == {"type": "any"}


def test_unknown_tool_type_is_rejected() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        upstream_body({"messages": HI, "tools": [{"type": "code_interpreter"}]})
    assert info.value.param == "tools"


def test_web_search_options_and_filters() -> None:
    body = upstream_body({"messages": HI, "tools": [{
        "type": "web_search", "filters": {"allowed_domains": ["a.com"]},
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}}]})
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                              "allowed_domains": ["a.com"], "user_location": {
                                  "type": "approximate", "city": "Paris", "country": "FR"}}]
    body = upstream_body({"messages": HI, "web_search_options": {
        "user_location": {"type": "approximate", "approximate": {"city": "Rome"}}}})
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                              "user_location": {"type": "approximate", "city": "Rome"}}]


def test_json_schema_forced_tool_mode_for_older_models() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = upstream_body({"messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        target(options={"structured_output": "tool"}))
    assert body["tools"] == [{"name": "json_response", "input_schema": schema,
                              "description": "Return the answer as this JSON object."}]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert "output_config" not in body


def test_json_object_instruction_follows_client_system() -> None:
    body = upstream_body({"messages": [{"role": "system", "content": "S"}, *HI],
                          "response_format": {"type": "json_object"}})
    assert [b["text"] for b in body["system"]][0] == "S"
    assert "JSON object" in body["system"][1]["text"]


def test_embeddings_are_refused_naming_the_provider() -> None:
    req = EmbeddingsRequest(body={"input": "x", "model": "m"}, model="m")
    with pytest.raises(InvalidRequest, match="claude-main.*no embeddings"):
        ADAPTER.build_embeddings_request(req, target())
