"""Deterministic OpenAI-format replies derived from the request (no I/O, no clocks but `created`).

Shared by the in-process `mock` provider and `modelyard mock-provider --flavor openai`.
The reply echoes the last user text; tools are called when `tool_choice` requires it or the text
starts with "call:"; `json_schema` output is an object that fits the schema's properties.
"""
from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Iterator

from gateway.types import JSON, dumps

DEFAULT_REPLY = "Hello from Modelyard's mock provider."


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: list[JSON]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content")).strip()
    return ""


def prompt_tokens(messages: list[JSON]) -> int:
    chars = sum(len(text_of(m.get("content"))) for m in messages)
    return max(1, chars // 4) + 3 * len(messages)


def sample(schema: Any, prompt: str) -> Any:
    """A value that fits a JSON schema (any casing of `type`, as Gemini's upper-case names):
    numbers 21, booleans true, the first enum value, else the prompt's last word."""
    kind = str(schema.get("type", "")).lower() if isinstance(schema, dict) else ""
    if kind == "object":
        return {k: sample(v, prompt) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample(schema.get("items") or {}, prompt)]
    if kind in ("number", "integer"):
        return 21
    if kind == "boolean":
        return True
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    words = re.findall(r"[\w'-]+", prompt)
    return words[-1].strip("?!.") if words else "value"


def _tool_call(body: JSON, text: str) -> JSON | None:
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not (named or choice == "required" or text.lower().startswith("call:")):
        return None
    fn = next((t["function"] for t in tools if t["function"]["name"] == named), tools[0]["function"])
    arg_text = text.split(":", 1)[1].strip() if text.lower().startswith("call:") else text
    digest = hashlib.sha256(f"{fn['name']}:{arg_text}".encode()).hexdigest()[:24]
    return {"id": f"call_{digest}", "type": "function",
            "function": {"name": fn["name"], "arguments": dumps({"input": arg_text}).decode()}}


def reply_for(body: JSON) -> tuple[str | None, JSON | None]:
    """(text content, tool call) the mock answers with."""
    messages = body.get("messages") or []
    text = last_user_text(messages)
    call = _tool_call(body, text)
    if call is not None:
        return None, call
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return dumps(sample(schema, text)).decode(), None
    if fmt.get("type") == "json_object":
        return dumps({"echo": text}).decode(), None
    return text or DEFAULT_REPLY, None


def _usage(prompt: int, completion: int) -> JSON:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def completion(body: JSON) -> JSON:
    text, call = reply_for(body)
    messages = body.get("messages") or []
    n_completion = len(text.split()) if text else 12
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if call is not None:
        message["tool_calls"] = [call]
    rid = hashlib.sha256(dumps(messages)).hexdigest()[:29]
    return {
        "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "mock"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if call else "stop"}],
        "usage": _usage(prompt_tokens(messages), n_completion),
        "service_tier": "default", "system_fingerprint": "fp_modelyard_mock",
    }


def stream_chunks(body: JSON, chunk_words: int = 1) -> Iterator[bytes]:
    """SSE `data:` frames of the streamed reply, ending with `[DONE]`."""
    full = completion(body)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
            "model": full["model"], "system_fingerprint": full["system_fingerprint"]}

    def frame(delta: JSON, finish: str | None = None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}]}
        return b"data: " + dumps(chunk) + b"\n\n"

    message = full["choices"][0]["message"]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        yield frame({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call["id"], "type": "function",
             "function": {"name": call["function"]["name"], "arguments": ""}}]})
        args = call["function"]["arguments"]
        for i in range(0, len(args), 8):
            yield frame({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 8]}}]})
    else:
        yield frame({"role": "assistant", "content": "", "refusal": None})
        words = (message["content"] or "").split(" ")
        step = max(1, chunk_words)
        for i in range(0, len(words), step):
            piece = " ".join(words[i:i + step])
            yield frame({"content": piece if i == 0 else " " + piece})
    yield frame({}, full["choices"][0]["finish_reason"])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + dumps({**base, "choices": [], "usage": full["usage"]}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def embeddings(body: JSON) -> JSON:
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else list(inputs or [])
    dims = int(body.get("dimensions") or 8)
    data = []
    for i, item in enumerate(items):
        digest = hashlib.sha256(str(item).encode()).digest()
        data.append({"object": "embedding", "index": i,
                     "embedding": [round((digest[j % 32] - 128) / 128, 6) for j in range(dims)]})
    tokens = sum(max(1, len(str(x)) // 4) for x in items)
    return {"object": "list", "model": body.get("model", "mock"), "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
