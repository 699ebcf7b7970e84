"""Gemini `:streamGenerateContent?alt=sse` -> OpenAI `chat.completion.chunk` events.

Each SSE data event is a whole GenerateContentResponse (PROVIDERS.md §3.5): text parts are
deltas, function calls arrive complete, `usageMetadata` is cumulative (the last one wins),
`finishReason` is on the final chunk of a candidate and the stream has no terminator. Per
candidate (n > 1 -> candidateCount) the decoder emits: a role chunk, text / reasoning deltas,
each tool call whole in one delta (stable index and id), citations as `annotations`, and a
chunk with the finish reason; `close()` then emits the usage-only chunk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from adapters.gemini import response, wire
from adapters.gemini.errors import error_from_body
from gateway.errors import UpstreamProtocolError
from gateway.types import (
    JSON,
    ChatRequest,
    ServerSentEvent,
    StreamEvent,
    Target,
    Usage,
    loads,
)


@dataclass(slots=True)
class _Choice:
    index: int
    text: str = ""
    calls: int = 0
    finished: bool = False
    grounding: object = None


@dataclass(slots=True)
class GeminiStreamDecoder:
    target: Target
    parallel: bool = True
    usage: Usage | None = None
    response_id: str = ""
    choices: dict[int, _Choice] = field(default_factory=dict)

    @classmethod
    def for_request(cls, req: ChatRequest, target: Target) -> GeminiStreamDecoder:
        return cls(target=target, parallel=req.body.get("parallel_tool_calls") is not False)

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        text = event.data.strip()
        if not text or text == "[DONE]":
            return []
        try:
            data = loads(text)
        except ValueError:
            raise self._protocol("sent an SSE event that is not JSON") from None
        if not isinstance(data, dict):
            raise self._protocol("sent an SSE event that is not a JSON object")
        if isinstance(data.get("error"), dict):
            raise error_from_body(data["error"], self.target, None)
        self.response_id = str(data.get("responseId") or self.response_id)
        if data.get("usageMetadata"):
            self.usage = wire.usage_from(data["usageMetadata"])
        out: list[StreamEvent] = []
        candidates = data.get("candidates") or []
        for pos, cand in enumerate(candidates):
            out += self._candidate(cand, int(cand.get("index") or pos))
        feedback = data.get("promptFeedback") or {}
        if not candidates and feedback.get("blockReason"):
            out += self._blocked(feedback)
        return out

    def close(self) -> list[StreamEvent]:
        if not self.choices or not all(c.finished for c in self.choices.values()):
            raise self._protocol("stream ended before a finishReason")
        usage = self.usage or Usage()
        return [StreamEvent({"choices": [], "usage": usage.to_openai()}, usage=usage,
                            usage_only=True)]

    # ------------------------------------------------------------ internals

    def _protocol(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{wire.provider_label(self.target)} {what}",
                                     provider=self.target.provider.name)

    def _start(self, index: int) -> tuple[_Choice, list[StreamEvent]]:
        state = self.choices.get(index)
        if state is not None:
            return state, []
        state = self.choices[index] = _Choice(index)
        return state, [chunk(index, {"role": "assistant", "content": ""})]

    def _candidate(self, cand: JSON, index: int) -> list[StreamEvent]:
        state, out = self._start(index)
        if state.finished:
            return out
        logprobs = response.convert_logprobs(cand.get("logprobsResult"))
        for part in (cand.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                if self.parallel or state.calls == 0:
                    call = response.tool_call(part, self.response_id, index, state.calls)
                    out.append(chunk(index, {"tool_calls": [{"index": state.calls, **call}]}))
                    state.calls += 1
            elif part.get("thought") and part.get("text"):
                out.append(chunk(index, {"reasoning_content": part["text"]}))
            elif part.get("text"):
                state.text += part["text"]
                out.append(chunk(index, {"content": part["text"]}, logprobs=logprobs))
                logprobs = None
        grounding = cand.get("groundingMetadata")
        if grounding and grounding != state.grounding:
            state.grounding = grounding
            notes = response.citations(grounding, state.text)
            if notes:
                out.append(chunk(index, {"annotations": notes}))
        if cand.get("finishReason"):
            state.finished = True
            reason = response.finish_reason(cand["finishReason"], state.calls > 0)
            out.append(chunk(index, {}, finish_reason=reason))
        return out

    def _blocked(self, feedback: JSON) -> list[StreamEvent]:
        state, out = self._start(0)
        if state.finished:
            return out
        state.finished = True
        note = response.blocked_choice(feedback)["message"]["refusal"]
        out.append(chunk(0, {"refusal": note}))
        out.append(chunk(0, {}, finish_reason="content_filter"))
        return out


def chunk(index: int, delta: JSON, *, finish_reason: str | None = None,
          logprobs: JSON | None = None) -> StreamEvent:
    choice: JSON = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return StreamEvent({"object": "chat.completion.chunk", "choices": [choice]})
