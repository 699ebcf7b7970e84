"""Gemini SSE -> OpenAI chunks: recorded transcripts (PROVIDERS.md §3.5/§7.3) replayed at every
byte split, tool calls, citations, candidates, blocked prompts, errors and cut streams."""
from __future__ import annotations

from pathlib import Path

import pytest

from adapters.gemini import ADAPTER
from gateway.errors import UpstreamProtocolError, UpstreamUnavailable
from gateway.sse import replay
from gateway.types import JSON, RawResponse, ServerSentEvent, StreamEvent, dumps
from tests.adapters.gemini.helpers import chat, target

DATA = Path(__file__).parent / "data"
REQ = chat({"messages": [{"role": "user", "content": "Weather?"}], "stream": True})


def decode(raw: bytes, split: int, req: JSON | None = None) -> list[StreamEvent]:
    decoder = ADAPTER.stream_decoder(chat(req) if req else REQ, target())
    events = [e for sse in replay(raw, split) for e in decoder.feed(sse)]
    return events + decoder.close()


def bodies(events: list[StreamEvent]) -> list[JSON]:
    return [e.chunk for e in events]


def _chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


TEXT_EXPECTED = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "It is 21°C"}),
    _chunk({"content": " and clear in Tokyo."}),
    _chunk({}, "stop"),
    {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 11, "total_tokens": 51,
                              "prompt_tokens_details": {"cached_tokens": 0},
                              "completion_tokens_details": {"reasoning_tokens": 0}}},
]


def test_text_transcript_at_every_byte_split() -> None:
    raw = (DATA / "text_stream.sse").read_bytes()
    for split in range(1, len(raw) + 1):
        events = decode(raw, split)
        assert bodies(events) == TEXT_EXPECTED, split
        assert events[-1].usage_only and events[-1].usage is not None
        assert not any(e.usage_only for e in events[:-1])


def test_crlf_transcript_at_every_byte_split() -> None:
    raw = (DATA / "crlf_stream.sse").read_bytes()
    reference = bodies(decode(raw, len(raw)))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in reference[:-1]) == \
        "It is 21°C and clear."
    for split in range(1, len(raw)):
        assert bodies(decode(raw, split)) == reference, split


def test_function_call_transcript_at_every_byte_split() -> None:
    raw = (DATA / "function_call_stream.sse").read_bytes()
    reference = decode(raw, len(raw))
    call_chunk = reference[1].chunk["choices"][0]["delta"]["tool_calls"]
    assert len(call_chunk) == 1
    call = call_chunk[0]
    assert call["index"] == 0 and call["type"] == "function"
    assert call["id"].startswith("gcall_")  # carries the thought signature
    assert call["function"] == {"name": "getWeather", "arguments": '{"location":"Tokyo"}'}
    assert reference[2].chunk["choices"][0]["finish_reason"] == "tool_calls"
    usage = reference[-1].usage
    assert usage is not None and (usage.completion_tokens, usage.reasoning_tokens) == (118, 104)
    for split in range(1, len(raw)):
        assert bodies(decode(raw, split)) == bodies(reference), split


def test_streamed_call_id_equals_the_non_streamed_one() -> None:
    raw = (DATA / "function_call_stream.sse").read_bytes()
    streamed = decode(raw, 64)[1].chunk["choices"][0]["delta"]["tool_calls"][0]["id"]
    payload = replay(raw, len(raw))[0].data.encode()
    whole = ADAPTER.parse_response(RawResponse(200, {}, payload), REQ, target())
    assert whole.body["choices"][0]["message"]["tool_calls"][0]["id"] == streamed


def _event(obj: JSON) -> ServerSentEvent:
    return ServerSentEvent(dumps(obj).decode())


def test_several_calls_get_stable_indices_and_parallel_false_keeps_one() -> None:
    parts = [{"functionCall": {"name": "f", "args": {"i": 1}}},
             {"functionCall": {"name": "g", "args": {"i": 2}}}]
    events = [{"candidates": [{"content": {"parts": [{"text": "Let me check."}]}, "index": 0}]},
              {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP", "index": 0}]}]
    for parallel, names in ((True, ["f", "g"]), (False, ["f"])):
        body = {"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": parallel}
        decoder = ADAPTER.stream_decoder(chat(body), target())
        out = [c for e in events for c in decoder.feed(_event(e))] + decoder.close()
        calls = [tc for e in out for ch in e.chunk["choices"]
                 for tc in ch["delta"].get("tool_calls") or []]
        assert [c["function"]["name"] for c in calls] == names
        assert [c["index"] for c in calls] == list(range(len(names)))
        assert out[-2].chunk["choices"][0]["finish_reason"] == "tool_calls"


def test_multiple_candidates_route_by_index() -> None:
    decoder = ADAPTER.stream_decoder(REQ, target())
    out = decoder.feed(_event({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "index": 0},
        {"content": {"parts": [{"text": "b"}]}, "index": 1}]}))
    out += decoder.feed(_event({"candidates": [
        {"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}]}))
    with pytest.raises(UpstreamProtocolError):  # candidate 1 never finished
        decoder.close()
    out += decoder.feed(_event({"candidates": [{"finishReason": "MAX_TOKENS", "index": 1}]}))
    out += decoder.close()
    per = {0: "", 1: ""}
    for e in out:
        for ch in e.chunk["choices"]:
            per[ch["index"]] += ch["delta"].get("content") or ""
    assert per == {0: "a!", 1: "b"}
    finishes = [(ch["index"], ch["finish_reason"]) for e in out for ch in e.chunk["choices"]
                if ch["finish_reason"]]
    assert finishes == [(0, "stop"), (1, "length")]


def test_grounding_is_streamed_as_annotations() -> None:
    decoder = ADAPTER.stream_decoder(REQ, target())
    decoder.feed(_event({"candidates": [{"content": {"parts": [{"text": "Rain "}]}}]}))
    out = decoder.feed(_event({"candidates": [{
        "content": {"parts": [{"text": "today."}]}, "finishReason": "STOP",
        "groundingMetadata": {"groundingChunks": [{"web": {"uri": "https://w.test", "title": "W"}}],
                              "groundingSupports": [{"segment": {"startIndex": 5, "endIndex": 11,
                                                                 "text": "today."},
                                                     "groundingChunkIndices": [0]}]}}]}))
    assert out[1].chunk["choices"][0]["delta"] == {"annotations": [{
        "type": "url_citation", "url_citation": {"start_index": 5, "end_index": 11,
                                                 "url": "https://w.test", "title": "W"}}]}


def test_blocked_prompt_stream() -> None:
    decoder = ADAPTER.stream_decoder(REQ, target())
    out = decoder.feed(_event({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}))
    out += decoder.close()
    assert out[-2].chunk["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1].usage is not None and out[-1].usage.prompt_tokens == 9


def test_cut_stream_raises_on_close() -> None:
    raw = (DATA / "text_stream.sse").read_bytes()
    first_event = raw[:raw.index(b"\n\n") + 2]
    decoder = ADAPTER.stream_decoder(REQ, target())
    for sse in replay(first_event, 5):
        decoder.feed(sse)
    with pytest.raises(UpstreamProtocolError, match="before a finishReason"):
        decoder.close()
    with pytest.raises(UpstreamProtocolError):
        ADAPTER.stream_decoder(REQ, target()).close()


def test_in_stream_error_event_and_garbage() -> None:
    decoder = ADAPTER.stream_decoder(REQ, target())
    with pytest.raises(UpstreamUnavailable, match="503 UNAVAILABLE: The model is overloaded"):
        decoder.feed(_event({"error": {"code": 503, "message": "The model is overloaded.",
                                       "status": "UNAVAILABLE"}}))
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        decoder.feed(ServerSentEvent("{oops"))
    assert decoder.feed(ServerSentEvent("")) == []


def test_thought_parts_stream_as_reasoning_content() -> None:
    decoder = ADAPTER.stream_decoder(REQ, target())
    out = decoder.feed(_event({"candidates": [{"content": {"parts": [
        {"text": "thinking...", "thought": True}, {"text": "Answer"}]}, "finishReason": "STOP"}]}))
    assert [c.chunk["choices"][0]["delta"] for c in out] == [
        {"role": "assistant", "content": ""}, {"reasoning_content": "thinking..."},
        {"content": "Answer"}, {}]
