"""Gemini GenerateContentResponse -> OpenAI chat.completion: usage, finish reasons, tool calls,
citations, logprobs, blocked prompts; and embeddings both ways."""
from __future__ import annotations

import base64
import re
import struct

import pytest

from adapters.gemini import ADAPTER
from gateway.errors import InvalidRequest, UnsupportedParameter, UpstreamProtocolError
from gateway.types import EmbeddingsRequest
from tests.adapters.gemini.helpers import (
    API_KEY,
    BASE,
    MODEL,
    chat,
    raw,
    target,
    upstream_body,
)

REQ = chat({"messages": [{"role": "user", "content": "Hi"}]})

# PROVIDERS.md §7.3: the recorded function-call answer and its expected translation.
RECORDED = {"candidates": [{"content": {"parts": [
    {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
     "thoughtSignature": "CikBcsjafFK168Ib"}], "role": "model"},
    "finishReason": "STOP", "index": 0, "finishMessage": "Model generated function call(s)."}],
    "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "totalTokenCount": 201,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 83}],
                      "thoughtsTokenCount": 104},
    "modelVersion": "gemini-2.5-flash", "responseId": "qpc2afWVFJK4vr0Pq6WiyAU"}


def test_recorded_function_call_answer() -> None:
    resp = ADAPTER.parse_response(raw(RECORDED), REQ, target())
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "getWeather", "arguments": '{"location":"Tokyo"}'}
    assert choice["message"]["content"] is None
    assert resp.body["usage"] == {"prompt_tokens": 83, "completion_tokens": 118,
                                  "total_tokens": 201,
                                  "prompt_tokens_details": {"cached_tokens": 0},
                                  "completion_tokens_details": {"reasoning_tokens": 104}}
    again = ADAPTER.parse_response(raw(RECORDED), REQ, target()).body
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == call["id"]  # deterministic


def test_cached_and_tool_use_prompt_tokens() -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "toolUsePromptTokenCount": 20,
                              "cachedContentTokenCount": 64, "candidatesTokenCount": 5,
                              "totalTokenCount": 125}}
    usage = ADAPTER.parse_response(raw(body), REQ, target()).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == (120, 5, 64, 0)


@pytest.mark.parametrize("reason,expected", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop"), ("SOMETHING_NEW", "stop")])
def test_finish_reasons(reason: str, expected: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert ADAPTER.parse_response(raw(body), REQ, target()).body["choices"][0][
        "finish_reason"] == expected


def test_blocked_prompt_is_content_filter_with_usage() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
            "modelVersion": MODEL}
    resp = ADAPTER.parse_response(raw(body), REQ, target())
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] is None
    assert "SAFETY" in choice["message"]["refusal"]
    assert resp.usage is not None and resp.usage.prompt_tokens == 12


def test_safety_stop_without_content() -> None:
    body = {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
    choice = ADAPTER.parse_response(raw(body), REQ, target()).body["choices"][0]
    assert choice == {"index": 0, "finish_reason": "content_filter", "logprobs": None,
                      "message": {"role": "assistant", "content": None}}


def test_thoughts_text_and_candidates() -> None:
    body = {"candidates": [
        {"content": {"parts": [{"text": "plan", "thought": True}, {"text": "A"}, {"text": "B"}]},
         "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "C"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}
    choices = ADAPTER.parse_response(raw(body), REQ, target()).body["choices"]
    assert choices[0]["message"] == {"role": "assistant", "content": "AB",
                                     "reasoning_content": "plan"}
    assert (choices[1]["index"], choices[1]["finish_reason"]) == (1, "length")


def test_parallel_tool_calls_false_keeps_only_the_first_call() -> None:
    call = {"functionCall": {"name": "f", "args": {"i": 1}}}
    body = {"candidates": [{"content": {"parts": [call, call]}, "finishReason": "STOP"}]}
    one = chat({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False})
    assert len(ADAPTER.parse_response(raw(body), one, target()).body["choices"][0]["message"][
        "tool_calls"]) == 1
    calls = ADAPTER.parse_response(raw(body), REQ, target()).body["choices"][0]["message"][
        "tool_calls"]
    assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) for c in calls)


def test_citations_convert_byte_offsets_to_characters() -> None:
    text = "Café ouvert. Bientôt fermé."
    first = "Café ouvert."
    start2 = len(first.encode()) + 1
    body = {"candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": "STOP",
                            "groundingMetadata": {
                                "groundingChunks": [{"web": {"uri": "https://a.test", "title": "A"}},
                                                    {"web": {"uri": "https://b.test"}},
                                                    {"web": {"uri": "https://c.test"}}],
                                "groundingSupports": [
                                    {"segment": {"startIndex": start2,
                                                 "endIndex": len(text.encode())},
                                     "groundingChunkIndices": [0, 1]}]}}]}
    notes = ADAPTER.parse_response(raw(body), REQ, target()).body["choices"][0]["message"][
        "annotations"]
    spans = [(n["url_citation"]["url"], n["url_citation"]["start_index"],
              n["url_citation"]["end_index"], n["url_citation"]["title"]) for n in notes]
    assert spans == [("https://a.test", 13, 27, "A"), ("https://b.test", 13, 27, "https://b.test"),
                     ("https://c.test", 0, 27, "https://c.test")]
    assert text[13:27] == "Bientôt fermé."


def test_logprobs_translation() -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP",
                            "logprobsResult": {
                                "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}],
                                "topCandidates": [{"candidates": [
                                    {"token": "Hi", "logProbability": -0.1},
                                    {"token": "Yo", "logProbability": -2.5}]}]}}]}
    lp = ADAPTER.parse_response(raw(body), REQ, target()).body["choices"][0]["logprobs"]
    assert lp == {"refusal": None, "content": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
            {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]}]}]}


def test_non_json_body_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="gemini \\(provider 'google'\\)"):
        ADAPTER.parse_response(raw(b"<html>oops</html>"), REQ, target())


# ---------------------------------------------------------------- embeddings


def emb(body: dict) -> EmbeddingsRequest:
    return EmbeddingsRequest(body={"model": "google/emb", **body}, model="google/emb")


def test_single_input_uses_embed_content() -> None:
    up = ADAPTER.build_embeddings_request(emb({"input": "hello", "dimensions": 4}),
                                          target("gemini-embedding-001"))
    assert up.url == f"{BASE}/gemini-embedding-001:embedContent"
    assert up.headers["x-goog-api-key"] == API_KEY and API_KEY not in up.url
    assert upstream_body(up) == {"model": "models/gemini-embedding-001",
                                 "content": {"parts": [{"text": "hello"}]},
                                 "outputDimensionality": 4}


def test_several_inputs_use_batch_embed_contents_and_usage_is_reported() -> None:
    req = emb({"input": ["a", "bb"], "user": "u"})
    up = ADAPTER.build_embeddings_request(req, target("gemini-embedding-001"))
    assert up.url == f"{BASE}/gemini-embedding-001:batchEmbedContents"
    assert upstream_body(up) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "bb"}]}}]}
    answer = {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}],
              "usageMetadata": {"promptTokenCount": 7}}
    resp = ADAPTER.parse_embeddings_response(raw(answer), req, target("gemini-embedding-001"))
    assert resp.body == {"object": "list", "model": "google/emb",
                         "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                                  {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}],
                         "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    assert resp.usage is not None and resp.usage.prompt_tokens == 7


def test_embeddings_base64_and_estimated_usage() -> None:
    req = emb({"input": "12345678", "encoding_format": "base64"})
    resp = ADAPTER.parse_embeddings_response(raw({"embedding": {"values": [0.5, -1.0]}}), req,
                                             target())
    packed = base64.b64decode(resp.body["data"][0]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, -1.0)
    assert resp.body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_policy_and_token_inputs() -> None:
    with pytest.raises(UnsupportedParameter):
        ADAPTER.build_embeddings_request(emb({"input": "a", "weird": 1}), target())
    with pytest.raises(InvalidRequest, match="token arrays"):
        ADAPTER.build_embeddings_request(emb({"input": [[1, 2, 3]]}), target())
    with pytest.raises(UpstreamProtocolError):
        ADAPTER.parse_embeddings_response(raw({"nothing": 1}), emb({"input": "a"}), target())
