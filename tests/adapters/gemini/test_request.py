"""OpenAI request -> Gemini generateContent request: parameters, policy, tools, ids, media."""
from __future__ import annotations

import pytest

from adapters.gemini import ADAPTER, wire
from gateway.errors import InvalidRequest, UnsupportedParameter
from tests.adapters.conformance import WEATHER_TOOL
from tests.adapters.gemini.helpers import API_KEY, chat, raw, target, upstream_body

HI = [{"role": "user", "content": "Hi"}]


def body_of(req: dict, **kw: object) -> dict:
    return upstream_body(ADAPTER.build_request(chat(req), target(**kw)))  # type: ignore[arg-type]


def test_generation_config_maps_every_sampling_parameter() -> None:
    out = body_of({"messages": HI, "max_tokens": 10, "max_completion_tokens": 20,
                   "temperature": 1.7, "top_p": 0.5, "n": 2, "stop": "END", "seed": 7,
                   "presence_penalty": 0.3, "frequency_penalty": -0.4, "top_k": 3,
                   "logprobs": True, "top_logprobs": 2})
    assert out["generationConfig"] == {
        "maxOutputTokens": 20, "temperature": 1.7, "topP": 0.5, "candidateCount": 2,
        "stopSequences": ["END"], "seed": 7, "presencePenalty": 0.3, "frequencyPenalty": -0.4,
        "topK": 3, "responseLogprobs": True, "logprobs": 2}


def test_route_default_max_tokens_applies_only_when_client_sets_none() -> None:
    assert body_of({"messages": HI}, defaults={"max_tokens": 64})["generationConfig"] == {
        "maxOutputTokens": 64}
    assert body_of({"messages": HI, "max_completion_tokens": 5},
                   defaults={"max_tokens": 64})["generationConfig"] == {"maxOutputTokens": 5}


@pytest.mark.parametrize("param,value", [("logit_bias", {"50256": -100}), ("modalities", ["audio"]),
                                         ("functions", [{"name": "f"}]), ("prediction", {}),
                                         ("made_up_field", 1)])
def test_unsupported_parameters_are_rejected_naming_provider_and_parameter(
        param: str, value: object) -> None:
    with pytest.raises(UnsupportedParameter) as info:
        ADAPTER.build_request(chat({"messages": HI, param: value}), target())
    assert info.value.status == 400
    assert info.value.param == param
    assert "google (gemini)" in info.value.message and f"'{param}'" in info.value.message


def test_unsupported_parameters_are_dropped_when_the_route_says_so() -> None:
    out = body_of({"messages": HI, "logit_bias": {"1": 2}, "temperature": 0.2},
                  drop_unsupported=True)
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                   "generationConfig": {"temperature": 0.2}}


def test_ignored_fields_and_gateway_fields_never_reach_gemini() -> None:
    out = body_of({"messages": HI, "user": "u1", "store": True, "metadata": {"a": "b"},
                   "observability": True, "parallel_tool_calls": True,
                   "stream_options": {"include_usage": True}})
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_url_key_and_headers() -> None:
    up = ADAPTER.build_request(chat({"messages": HI, "stream": True}),
                               target("models/gemini-2.5-pro", base_url="http://127.0.0.1:9/",
                                      headers={"x-extra": "1"}))
    assert up.url == "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert up.headers == {"content-type": "application/json", "x-extra": "1",
                          "x-goog-api-key": API_KEY}
    assert API_KEY not in up.url and up.stream


def test_system_messages_anywhere_go_to_system_instruction_in_order() -> None:
    out = body_of({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "A"}]},
        {"role": "user", "content": "u1"},
        {"role": "developer", "content": "B"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "u2"}]})
    assert out["systemInstruction"] == {"parts": [{"text": "A"}, {"text": "B"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "u1"}, {"text": "u2"}]}]


def test_only_system_messages_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequest, match="at least one user or assistant message"):
        ADAPTER.build_request(chat({"messages": [{"role": "system", "content": "x"}]}), target())


def test_tool_results_and_following_user_text_share_one_user_turn() -> None:
    out = body_of({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Sure.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "plain"}]},
        {"role": "user", "content": "thanks"}]})
    assert out["contents"][1:] == [
        {"role": "model", "parts": [{"text": "Sure."}, {"functionCall": {"name": "f", "args": {}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "f", "response": {"output": "plain"}}},
            {"text": "thanks"}]}]


def test_unknown_tool_call_id_and_bad_arguments_are_400s() -> None:
    with pytest.raises(InvalidRequest, match="unknown tool_call_id"):
        ADAPTER.build_request(chat({"messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "content": "1"}]}), target())
    with pytest.raises(InvalidRequest, match="not valid JSON") as info:
        ADAPTER.build_request(chat({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}),
            target())
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_thought_signature_and_gemini_call_id_survive_the_round_trip() -> None:
    """Gemini's signature leaves inside the OpenAI tool call id and comes back on functionCall."""
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}, "id": "fc-7"},
         "thoughtSignature": "CikBcsjafFK168Ib+/=="},
        {"functionCall": {"name": "getWeather", "args": {"location": "Osaka"}}}]},
        "finishReason": "STOP", "index": 0}], "responseId": "r9"}
    msg = ADAPTER.parse_response(raw(answer), chat({"messages": HI}), target()).body[
        "choices"][0]["message"]
    first, second = msg["tool_calls"]
    assert first["id"].startswith("gcall_") and second["id"].startswith("call_")
    assert all(c.isalnum() or c in "_-" for c in first["id"])  # safe for other providers too
    follow = body_of({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": msg["tool_calls"]},
        {"role": "tool", "tool_call_id": first["id"], "content": '{"tempC": 21}'},
        {"role": "tool", "tool_call_id": second["id"], "content": "18"}]})
    assert follow["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}, "id": "fc-7"},
             "thoughtSignature": "CikBcsjafFK168Ib+/=="},
            {"functionCall": {"name": "getWeather", "args": {"location": "Osaka"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "getWeather", "response": {"output": {"tempC": 21}},
                                  "id": "fc-7"}},
            {"functionResponse": {"name": "getWeather", "response": {"output": "18"}}}]}]


def test_signature_from_google_compat_extra_content_field() -> None:
    out = body_of({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"},
             "extra_content": {"google": {"thought_signature": "SIG"}}}]}]})
    assert out["contents"][1]["parts"] == [{"functionCall": {"name": "f", "args": {}},
                                            "thoughtSignature": "SIG"}]


def test_a_garbled_envelope_id_is_treated_as_opaque() -> None:
    assert wire.parse_call_id("gcall_!!!notbase64") == (None, None)
    assert wire.parse_call_id("call_123") == (None, None)


def test_json_schema_keywords_outside_openapi_go_as_parameters_json_schema() -> None:
    strict = {"type": "function", "function": {"name": "g", "parameters": {
        "type": "object", "properties": {"q": {"type": ["string", "null"]}},
        "additionalProperties": False}}}
    out = body_of({"messages": HI, "tools": [WEATHER_TOOL, strict]})
    decls = out["tools"][0]["functionDeclarations"]
    assert "parameters" in decls[0]
    assert decls[1] == {"name": "g", "parametersJsonSchema": strict["function"]["parameters"]}


def test_allowed_tools_choice() -> None:
    other = {"type": "function", "function": {"name": "other"}}
    pick = {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}
    out = body_of({"messages": HI, "tools": [WEATHER_TOOL, other], "tool_choice": pick})
    assert [d["name"] for d in out["tools"][0]["functionDeclarations"]] == ["get_weather"]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    pick["allowed_tools"]["mode"] = "required"  # type: ignore[index]
    out = body_of({"messages": HI, "tools": [WEATHER_TOOL, other], "tool_choice": pick})
    assert out["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert len(out["tools"][0]["functionDeclarations"]) == 2


def test_named_tool_choice_must_exist_and_unknown_tool_types_fail() -> None:
    with pytest.raises(InvalidRequest, match="unknown function 'nope'"):
        body_of({"messages": HI, "tools": [WEATHER_TOOL],
                 "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    with pytest.raises(InvalidRequest, match="unsupported tool type 'code_interpreter'"):
        body_of({"messages": HI, "tools": [{"type": "code_interpreter"}]})


def test_web_search_with_functions_and_web_search_options() -> None:
    out = body_of({"messages": HI, "tools": [WEATHER_TOOL, {"type": "web_search"}]})
    assert out["tools"][1] == {"googleSearch": {}}
    assert body_of({"messages": HI, "web_search_options": {}})["tools"] == [{"googleSearch": {}}]


def test_media_parts() -> None:
    out = body_of({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.test/a/b.png?sig=1", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/noext"}},
        {"type": "input_audio", "input_audio": {"data": "QUJD", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "file", "file": {"file_id": "files/abc"}}]}]})
    assert out["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a/b.png?sig=1"}},
        {"fileData": {"fileUri": "https://x.test/noext"}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "QUJD"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}]
    with pytest.raises(InvalidRequest, match="base64"):
        body_of({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]})


def test_reasoning_effort_budget_and_level() -> None:
    assert body_of({"messages": HI, "reasoning_effort": "medium"})["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 8192}}
    out = upstream_body(ADAPTER.build_request(chat({"messages": HI, "reasoning_effort": "low"}),
                                              target("gemini-3-pro-preview")))
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "low"}}
    with pytest.raises(UnsupportedParameter, match="reasoning_effort"):
        ADAPTER.build_request(chat({"messages": HI, "reasoning_effort": "none"}),
                              target("gemini-3-pro-preview"))


def test_response_format_text_is_default_and_bad_schema_is_400() -> None:
    assert "generationConfig" not in body_of({"messages": HI, "response_format": {"type": "text"}})
    with pytest.raises(InvalidRequest, match="schema is required"):
        body_of({"messages": HI, "response_format": {"type": "json_schema", "json_schema": {}}})
