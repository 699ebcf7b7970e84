"""Anthropic Messages SSE -> OpenAI `chat.completion.chunk` events (PROVIDERS §2.8, §6.8).

One `AnthropicStreamDecoder` per streamed request. Emitted, in order: a role chunk at
`message_start`; text deltas; for each tool_use block a header chunk (stable `index` among tool
calls, `id`, name) then argument fragments; thinking as `reasoning_content` deltas; url_citation
`annotations` when a cited text block ends; a finish chunk at `message_delta`; and at
`message_stop` a usage-only event (`choices: []`), always (the core strips it when the client did
not ask). Pings are ignored; an `error` event raises the mapped UpstreamError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from adapters.anthropic.errors import stream_error
from adapters.anthropic.response import citations, response_format_kind
from adapters.anthropic.wire import JSON_TOOL_NAME, finish_reason, provider_label, usage_from
from gateway.errors import UpstreamProtocolError
from gateway.types import JSON, ChatRequest, ServerSentEvent, StreamEvent, Target, Usage, loads


@dataclass(slots=True)
class _Block:
    kind: str  # text | tool | json | thinking | skip
    tool_index: int = -1
    start: int = 0  # offset of a text block in the assembled content (for citations)
    cites: list[JSON] = field(default_factory=list)


def _chunk(delta: JSON, finish: str | None = None) -> StreamEvent:
    return StreamEvent({"object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


class AnthropicStreamDecoder:
    def __init__(self, req: ChatRequest, target: Target) -> None:
        self._target = target
        self._json_tool = response_format_kind(req) == "json_schema"
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._length = 0  # characters of content emitted so far
        self._usage: dict[str, Any] = {}
        self._started = False
        self._finished = False
        self._stopped = False
        self._handlers: dict[str, Callable[[JSON], list[StreamEvent]]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
        }

    @property
    def usage(self) -> Usage:
        """Usage seen so far (partial if the stream was cut): for accounting after a failure."""
        return usage_from(self._usage)

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        if self._stopped or not event.data.strip():
            return []
        try:
            data = loads(event.data)
        except ValueError as exc:
            raise self._protocol(f"sent an unparseable stream event {event.event!r}") from exc
        if not isinstance(data, dict):
            raise self._protocol(f"sent a stream event that is not an object: {event.event!r}")
        kind = data.get("type") or event.event
        if kind == "error":
            raise stream_error(data, self._target)
        handler = self._handlers.get(str(kind))
        return handler(data) if handler else []  # ping and unknown future events

    def close(self) -> list[StreamEvent]:
        if not self._stopped:
            raise self._protocol("stream ended before message_stop")
        return []

    # ------------------------------------------------------------ events

    def _message_start(self, data: JSON) -> list[StreamEvent]:
        self._merge_usage((data.get("message") or {}).get("usage"))
        if self._started:
            return []
        self._started = True
        return [_chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: JSON) -> list[StreamEvent]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        index = int(data.get("index", len(self._blocks)))
        if kind == "text":
            self._blocks[index] = _Block("text", start=self._length)
            return self._text(block.get("text") or "")
        if kind == "tool_use" and self._json_tool and block.get("name") == JSON_TOOL_NAME:
            self._blocks[index] = _Block("json")
            return []
        if kind == "tool_use":
            self._blocks[index] = _Block("tool", tool_index=self._tools)
            self._tools += 1
            return [_chunk({"tool_calls": [{
                "index": self._tools - 1, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}]})]
        if kind == "thinking":
            self._blocks[index] = _Block("thinking")
            return self._reasoning(block.get("thinking") or "")
        self._blocks[index] = _Block("skip")  # server_tool_use, web_search_tool_result, ...
        return []

    def _block_delta(self, data: JSON) -> list[StreamEvent]:
        block = self._blocks.get(int(data.get("index", -1)))
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if block is None or block.kind == "skip":
            return []
        if kind == "text_delta":
            return self._text(delta.get("text") or "")
        if kind == "input_json_delta":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            if block.kind == "json":
                return self._text(fragment)
            return [_chunk({"tool_calls": [{"index": block.tool_index,
                                            "function": {"arguments": fragment}}]})]
        if kind == "thinking_delta":
            return self._reasoning(delta.get("thinking") or "")
        if kind == "citations_delta" and isinstance(delta.get("citation"), dict):
            block.cites.append(delta["citation"])
        return []  # signature_delta and unknown deltas

    def _block_stop(self, data: JSON) -> list[StreamEvent]:
        block = self._blocks.get(int(data.get("index", -1)))
        if block is None or block.kind != "text" or not block.cites:
            return []
        found = citations(block.cites, block.start, self._length)
        return [_chunk({"annotations": found})] if found else []

    def _message_delta(self, data: JSON) -> list[StreamEvent]:
        self._merge_usage(data.get("usage"))
        reason = finish_reason((data.get("delta") or {}).get("stop_reason"))
        if reason is None or self._finished:
            return []
        self._finished = True
        if reason == "tool_calls" and self._json_tool and self._tools == 0:
            reason = "stop"  # the forced JSON tool answered: it is the message content
        return [_chunk({}, reason)]

    def _message_stop(self, data: JSON) -> list[StreamEvent]:
        self._stopped = True
        out = [] if self._finished else [_chunk({}, "stop")]
        self._finished = True
        usage = self.usage
        out.append(StreamEvent({"object": "chat.completion.chunk", "choices": [],
                                "usage": usage.to_openai()}, usage=usage, usage_only=True))
        return out

    # ------------------------------------------------------------ helpers

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        self._length += len(text)
        return [_chunk({"content": text})]

    def _reasoning(self, text: str) -> list[StreamEvent]:
        return [_chunk({"reasoning_content": text})] if text else []

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):  # values are cumulative: later events override
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _protocol(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{provider_label(self._target)} {what}",
                                     provider=self._target.provider.name)
