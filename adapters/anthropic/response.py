"""Anthropic Messages response -> OpenAI `chat.completion` body (PROVIDERS §2.7, §6.4-§6.6)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from adapters.anthropic.errors import parse_error
from adapters.anthropic.wire import JSON_TOOL_NAME, finish_reason, provider_label, usage_from
from gateway.errors import UpstreamProtocolError
from gateway.types import JSON, ChatRequest, ChatResponse, RawResponse, Target, dumps


def response_format_kind(req: ChatRequest) -> str | None:
    fmt = req.body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def parse_response(raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse:
    if raw.status >= 400:
        raise parse_error(raw, target)
    data = raw.json()
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise UpstreamProtocolError(
            f"{provider_label(target)} answered {raw.status} with a body that is not a message",
            provider=target.provider.name, upstream_status=raw.status)
    kind = response_format_kind(req)
    message, forced_json = translate_content(data["content"], json_tool=kind == "json_schema")
    if kind == "json_object" and isinstance(message.get("content"), str):
        message["content"] = strip_code_fence(message["content"])
    reason = finish_reason(data.get("stop_reason")) or "stop"
    if forced_json and reason == "tool_calls":
        reason = "stop"
    usage = usage_from(data.get("usage"))
    body: JSON = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": usage.to_openai(),
    }
    return ChatResponse(body=body, usage=usage)


def translate_content(blocks: list[Mapping[str, Any]], *, json_tool: bool) -> tuple[JSON, bool]:
    """Text blocks are concatenated into `content`; web-search citations become url_citation
    annotations over the cited block's span; tool_use blocks become `tool_calls`; thinking goes
    to the non-standard `reasoning_content`. Server tool blocks (web search calls and results)
    are the provider's own business and are not shown as tool calls."""
    text = ""
    reasoning = ""
    annotations: list[JSON] = []
    tool_calls: list[JSON] = []
    forced_json = False
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            start = len(text)
            text += block.get("text") or ""
            annotations += citations(block.get("citations") or [], start, len(text))
        elif kind == "tool_use" and json_tool and block.get("name") == JSON_TOOL_NAME:
            text += dumps(block.get("input") or {}).decode()
            forced_json = True
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": dumps(block.get("input") or {}).decode()}})
        elif kind == "thinking":
            reasoning += block.get("thinking") or ""
    message: JSON = {"role": "assistant", "content": text if (text or not tool_calls) else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if annotations:
        message["annotations"] = annotations
    if reasoning:
        message["reasoning_content"] = reasoning
    return message, forced_json


def citations(items: Sequence[Mapping[str, Any]], start: int, end: int) -> list[JSON]:
    out: list[JSON] = []
    for c in items:
        if c.get("type") != "web_search_result_location" or not c.get("url"):
            continue
        out.append({"type": "url_citation", "url_citation": {
            "start_index": start, "end_index": end, "url": c["url"],
            "title": c.get("title") or c["url"]}})
    return out


def strip_code_fence(text: str) -> str:
    """json_object has no native mode on Anthropic: undo a ```json fence if the model added one."""
    s = text.strip()
    if not s.startswith("```") or not s.endswith("```") or len(s) < 6:
        return text
    inner = s[3:-3]
    newline = inner.find("\n")
    if newline >= 0 and inner[:newline].strip().isalpha():
        inner = inner[newline + 1:]
    return inner.strip()
