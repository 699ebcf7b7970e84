"""Anthropic SSE -> OpenAI chunks: recorded transcripts at every byte split, and edge cases."""
from __future__ import annotations

from typing import Any

import pytest

from adapters.anthropic import ADAPTER
from gateway.errors import UpstreamProtocolError, UpstreamRateLimited, UpstreamUnavailable
from gateway.sse import replay
from gateway.types import ServerSentEvent, StreamEvent, dumps
from tests.adapters.anthropic.helpers import DATA, chat, target

STREAM_REQ = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "stream": True}


def _decode(raw: bytes, split: int, body: dict[str, Any] | None = None) -> list[StreamEvent]:
    decoder = ADAPTER.stream_decoder(chat(body or STREAM_REQ), target())
    out: list[StreamEvent] = []
    for event in replay(raw, split):
        out += decoder.feed(event)
    return out + decoder.close()


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [], "usage": {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0}}}


TOOL_EXPECTED = [
    _delta({"role": "assistant", "content": ""}),
    _delta({"content": "I'll check the current weather in Paris for you."}),
    _delta({"tool_calls": [{"index": 0, "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": "{\"locati"}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": "on\": \"P"}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": "ar"}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
    _delta({}, "tool_calls"),
    _usage_chunk(377, 65),
]
TEXT_EXPECTED = [
    _delta({"role": "assistant", "content": ""}),
    _delta({"content": "Hello"}),
    _delta({"content": " there"}),
    _delta({"content": "!"}),
    _delta({}, "stop"),
    _usage_chunk(11, 6),
]


@pytest.mark.parametrize(("name", "expected"), [("tool_use_stream.txt", TOOL_EXPECTED),
                                                ("text_stream.txt", TEXT_EXPECTED)])
def test_recorded_transcript_at_every_split(name: str, expected: list[dict[str, Any]]) -> None:
    raw = (DATA / name).read_bytes()
    reference = _decode(raw, len(raw))
    assert [e.chunk for e in reference] == expected
    last = reference[-1]
    assert last.usage_only and last.usage is not None
    assert last.usage.total_tokens == expected[-1]["usage"]["total_tokens"]
    assert not any(e.usage_only for e in reference[:-1])
    for split in range(1, len(raw) + 1):
        got = _decode(raw, split)
        assert [(e.chunk, e.usage, e.usage_only) for e in got] == [
            (e.chunk, e.usage, e.usage_only) for e in reference], f"split={split}"


def test_arguments_reassemble_to_the_tool_input() -> None:
    events = _decode((DATA / "tool_use_stream.txt").read_bytes(), 7)
    args = "".join(tc["function"]["arguments"] for e in events for c in e.chunk["choices"]
                   for tc in c["delta"].get("tool_calls", []))
    assert args == "{\"location\": \"Paris\"}"


def _ev(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(dumps(data).decode(), name)


def _start(usage: dict[str, Any] | None = None) -> ServerSentEvent:
    return _ev("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "usage": usage or {"input_tokens": 10, "output_tokens": 1}}})


def _feed(events: list[ServerSentEvent], body: dict[str, Any] | None = None) -> list[StreamEvent]:
    decoder = ADAPTER.stream_decoder(chat(body or STREAM_REQ), target())
    out: list[StreamEvent] = []
    for event in events:
        out += decoder.feed(event)
    return out + decoder.close()


def _end(reason: str = "end_turn", usage: dict[str, Any] | None = None) -> list[ServerSentEvent]:
    return [_ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": reason},
                                  "usage": usage or {"output_tokens": 3}}),
            _ev("message_stop", {"type": "message_stop"})]


def test_error_event_raises_the_mapped_error() -> None:
    decoder = ADAPTER.stream_decoder(chat(STREAM_REQ), target())
    decoder.feed(_start())
    with pytest.raises(UpstreamUnavailable) as info:
        decoder.feed(_ev("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}}))
    assert info.value.retryable and info.value.upstream_status == 529
    assert "anthropic (provider 'claude-main')" in info.value.message
    assert "overloaded_error: Overloaded" in info.value.message
    with pytest.raises(UpstreamRateLimited):
        ADAPTER.stream_decoder(chat(STREAM_REQ), target()).feed(_ev("error", {
            "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))


def test_cut_stream_raises_on_close_and_keeps_partial_usage() -> None:
    decoder = ADAPTER.stream_decoder(chat(STREAM_REQ), target())
    decoder.feed(_start({"input_tokens": 40, "cache_read_input_tokens": 2, "output_tokens": 1}))
    with pytest.raises(UpstreamProtocolError, match="before message_stop"):
        decoder.close()
    assert decoder.usage.prompt_tokens == 42


def test_garbage_event_is_a_protocol_error() -> None:
    decoder = ADAPTER.stream_decoder(chat(STREAM_REQ), target())
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(ServerSentEvent("{not json", "message_start"))


def test_thinking_citations_and_usage_merge() -> None:
    events = [
        _start({"input_tokens": 10, "cache_creation_input_tokens": 4,
                "cache_read_input_tokens": 6, "output_tokens": 1}),
        _ev("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "thinking", "thinking": ""}}),
        _ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        _ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "signature_delta", "signature": "sig"}}),
        _ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
        _ev("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": "{\"query\":\"x\"}"}}),
        _ev("content_block_stop", {"type": "content_block_stop", "index": 1}),
        _ev("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}),
        _ev("content_block_stop", {"type": "content_block_stop", "index": 2}),
        _ev("content_block_start", {"type": "content_block_start", "index": 3,
                                    "content_block": {"type": "text", "text": ""}}),
        _ev("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": {
            "type": "citations_delta", "citation": {
                "type": "web_search_result_location", "url": "https://ex.com", "title": "Ex",
                "encrypted_index": "e", "cited_text": "c"}}}),
        _ev("content_block_delta", {"type": "content_block_delta", "index": 3,
                                    "delta": {"type": "text_delta", "text": "Cited."}}),
        _ev("content_block_stop", {"type": "content_block_stop", "index": 3}),
        _ev("ping", {"type": "ping"}),
        *_end("end_turn", {"output_tokens": 30, "output_tokens_details": {"thinking_tokens": 9}}),
    ]
    got = _feed(events)
    assert [e.chunk for e in got[:-1]] == [
        _delta({"role": "assistant", "content": ""}),
        _delta({"reasoning_content": "hmm"}),
        _delta({"content": "Cited."}),
        _delta({"annotations": [{"type": "url_citation", "url_citation": {
            "start_index": 0, "end_index": 6, "url": "https://ex.com", "title": "Ex"}}]}),
        _delta({}, "stop"),
    ]
    usage = got[-1].usage
    assert usage is not None and got[-1].usage_only
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens,
            usage.reasoning_tokens) == (20, 6, 30, 9)


def test_second_tool_call_gets_its_own_index_and_refusal_maps() -> None:
    def tool(index: int, tid: str) -> list[ServerSentEvent]:
        return [_ev("content_block_start", {"type": "content_block_start", "index": index,
                                            "content_block": {"type": "tool_use", "id": tid,
                                                              "name": "f", "input": {}}}),
                _ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": {"type": "input_json_delta",
                                                      "partial_json": "{}"}}),
                _ev("content_block_stop", {"type": "content_block_stop", "index": index})]
    got = _feed([_start(), *tool(0, "toolu_a"), *tool(1, "toolu_b"), *_end("refusal")])
    calls = [c["delta"]["tool_calls"][0] for e in got for c in e.chunk["choices"]
             if "tool_calls" in c["delta"]]
    assert [(c["index"], c.get("id")) for c in calls] == [
        (0, "toolu_a"), (0, None), (1, "toolu_b"), (1, None)]
    assert got[-2].chunk["choices"][0]["finish_reason"] == "content_filter"


def test_forced_json_tool_streams_as_content() -> None:
    body = {**STREAM_REQ, "response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}}}}
    events = [_start(),
              _ev("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "tool_use", "id": "toolu_j",
                                                            "name": "json_response",
                                                            "input": {}}}),
              _ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                  "type": "input_json_delta", "partial_json": "{\"a\":"}}),
              _ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                  "type": "input_json_delta", "partial_json": "1}"}}),
              _ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
              *_end("tool_use")]
    got = _feed(events, body)
    assert [e.chunk for e in got[:-1]] == [
        _delta({"role": "assistant", "content": ""}), _delta({"content": "{\"a\":"}),
        _delta({"content": "1}"}), _delta({}, "stop")]


def test_events_after_message_stop_are_ignored() -> None:
    decoder = ADAPTER.stream_decoder(chat(STREAM_REQ), target())
    for event in [_start(), *_end()]:
        decoder.feed(event)
    assert decoder.feed(_ev("ping", {"type": "ping"})) == []
    assert decoder.close() == []
