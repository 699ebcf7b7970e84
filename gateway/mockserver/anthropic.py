"""A fake Anthropic Messages upstream, faithful enough for the official `anthropic` SDK.

`create_app()` serves `POST /v1/messages` (JSON or SSE), `GET /v1/models` and Anthropic-shaped
errors. Replies are derived from the request only, so tests can predict them:

* a user turn holding tool_result blocks -> text "Tool results: <contents>";
* `output_config.format` json_schema -> a JSON object built from the schema;
* function tools and a prompt that asks (names the tool or a word of its name, or tool_choice
  any/tool) -> a short text block plus a tool_use block whose input fills the schema from the
  prompt (string fields get the prompt's last word);
* a web_search server tool -> server_tool_use, web_search_tool_result and cited text;
* otherwise "Echo: <last user text>".
`stop_sequences` cut the text (stop_reason stop_sequence); more words than `max_tokens` are cut
(max_tokens). Usage: input ~ characters/4, output = words (+ tool input size).

Fault drills: `fail_rate` answers that share of requests with 529 overloaded_error; a request
header `x-mock-error: <error type>` answers that Anthropic error (429 with retry-after: 1);
`x-mock-stream-error: <error type>` sends an `event: error` after the first content delta.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
from types import MappingProxyType
from typing import Any

from aiohttp import web

from gateway.types import JSON, dumps, loads
from gateway.mockserver.replies import sample
from gateway.mockserver.settings import MockSettings

_ERROR_STATUS = MappingProxyType({
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
})
_MODELS = (("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
           ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
           ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"))


SETTINGS = web.AppKey("anthropic_mock_settings", MockSettings)


def create_app(*, latency_ms: float = 0, fail_rate: float = 0.0,
               chunk_words: int = 1) -> web.Application:
    app = web.Application()
    app[SETTINGS] = MockSettings(latency_ms, fail_rate, max(1, chunk_words))
    app.router.add_post("/v1/messages", _messages)
    app.router.add_get("/v1/models", _models)
    return app


def error_body(etype: str, message: str, request_id: str = "req_mock") -> JSON:
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": request_id}


def _error(etype: str, message: str, request_id: str = "req_mock") -> web.Response:
    headers = {"request-id": request_id}
    if etype == "rate_limit_error":
        headers["retry-after"] = "1"
    return web.json_response(error_body(etype, message, request_id),
                             status=_ERROR_STATUS.get(etype, 500), headers=headers,
                             dumps=lambda o: dumps(o).decode())


# ---------------------------------------------------------------- handlers


async def _messages(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    raw = await request.read()
    rid = "req_" + hashlib.sha256(raw).hexdigest()[:24]
    if settings.latency_ms:
        await asyncio.sleep(settings.latency_ms / 1000)
    if not (request.headers.get("x-api-key") or request.headers.get("authorization")):
        return _error("authentication_error", "x-api-key header is required", rid)
    if not request.headers.get("anthropic-version"):
        return _error("invalid_request_error", "anthropic-version: header is required", rid)
    forced = request.headers.get("x-mock-error")
    if forced:
        return _error(forced, f"mock {forced}", rid)
    if settings.fail_rate and settings.rng.random() < settings.fail_rate:
        return _error("overloaded_error", "Overloaded", rid)
    try:
        body = loads(raw)
    except ValueError:
        return _error("invalid_request_error", "request body is not valid JSON", rid)
    problem = _validate(body)
    if problem:
        return _error("invalid_request_error", problem, rid)
    message = build_message(body, "msg_" + hashlib.sha256(raw).hexdigest()[:24])
    headers = {"request-id": rid}
    if not body.get("stream"):
        return web.Response(body=dumps(message), content_type="application/json", headers=headers)
    resp = web.StreamResponse(headers={**headers, "content-type": "text/event-stream",
                                       "cache-control": "no-cache"})
    await resp.prepare(request)
    stream_error = request.headers.get("x-mock-stream-error")
    for name, data in stream_events(message, settings.chunk_words, error_type=stream_error):
        await resp.write(f"event: {name}\ndata: ".encode() + dumps(data) + b"\n\n")
        if name == "error":
            break
    await resp.write_eof()
    return resp


async def _models(request: web.Request) -> web.Response:
    if not (request.headers.get("x-api-key") or request.headers.get("authorization")):
        return _error("authentication_error", "x-api-key header is required")
    data = [{"type": "model", "id": mid, "display_name": name, "created_at": created,
             "lifecycle": "active", "max_input_tokens": 200000, "max_tokens": 64000}
            for mid, name, created in _MODELS]
    return web.Response(body=dumps({"data": data, "has_more": False, "first_id": data[0]["id"],
                                    "last_id": data[-1]["id"]}), content_type="application/json")


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body: Input should be an object"
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a positive integer"
    if not isinstance(body["messages"], list) or not body["messages"]:
        return "messages: at least one message is required"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    return None


# ---------------------------------------------------------------- the reply


def _texts(content: Any) -> tuple[list[str], list[str]]:
    """(text of text blocks, text of tool_result blocks) of one message's content."""
    if isinstance(content, str):
        return [content], []
    texts: list[str] = []
    results: list[str] = []
    for block in content or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            results.append(inner if isinstance(inner, str) else " ".join(_texts(inner)[0]))
    return texts, results


def _pick_tool(body: JSON, prompt: str) -> JSON | None:
    tools = [t for t in body.get("tools") or [] if "input_schema" in t]
    choice = body.get("tool_choice") or {}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    low = prompt.lower()
    for tool in tools:
        words = [w for w in re.split(r"[_\W]+", tool["name"].lower()) if len(w) > 3]
        if tool["name"].lower() in low or any(w in low for w in words):
            return tool
    return tools[0] if choice.get("type") == "any" else None


def _ids(msg_id: str, n: int) -> str:
    return f"{msg_id.replace('msg_', '')[:20]}{n:02d}"


def _apply_limits(text: str, body: JSON) -> tuple[str, str, str | None]:
    for stop in body.get("stop_sequences") or []:
        if stop and stop in text:
            return text[:text.index(stop)], "stop_sequence", stop
    words = re.findall(r"\S+\s*", text)
    if len(words) > body["max_tokens"]:
        return "".join(words[:body["max_tokens"]]).rstrip(), "max_tokens", None
    return text, "end_turn", None


def build_message(body: JSON, msg_id: str) -> JSON:
    """The complete Message this mock answers `body` with (also the source of its stream)."""
    last: JSON = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
    texts, results = _texts(last.get("content"))
    prompt = " ".join(texts).strip()
    blocks: list[JSON] = []
    stop_reason, stop_seq = "end_turn", None
    server_tool = {"web_search_requests": 0, "web_fetch_requests": 0}
    fmt = (body.get("output_config") or {}).get("format") or {}
    tool = _pick_tool(body, prompt) if not results else None
    searching = any(str(t.get("type", "")).startswith("web_search")
                    for t in body.get("tools") or [])
    if results:
        blocks.append({"type": "text", "text": "Tool results: " + "; ".join(results)})
    elif fmt.get("type") == "json_schema":
        blocks.append({"type": "text", "text": dumps(sample(fmt.get("schema"), prompt)).decode()})
    elif tool is not None:
        blocks.append({"type": "text", "text": f"I'll use {tool['name']}."})
        blocks.append({"type": "tool_use", "id": "toolu_" + _ids(msg_id, 1), "name": tool["name"],
                       "input": sample(tool["input_schema"], prompt)})
        stop_reason = "tool_use"
    elif searching:
        blocks += _web_search_blocks(prompt, msg_id)
        server_tool["web_search_requests"] = 1
    else:
        text, stop_reason, stop_seq = _apply_limits(f"Echo: {prompt}" if prompt else "Hello!", body)
        blocks.append({"type": "text", "text": text})
    return {"id": msg_id, "type": "message", "role": "assistant", "model": body["model"],
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": stop_seq,
            "usage": _usage(body, blocks, server_tool)}


def _web_search_blocks(prompt: str, msg_id: str) -> list[JSON]:
    url = "https://example.com/news/" + (re.sub(r"\W+", "-", prompt.lower()).strip("-") or "q")
    title = f"Results for {prompt}"
    srv = "srvtoolu_" + _ids(msg_id, 1)
    return [
        {"type": "text", "text": "Let me search for that."},
        {"type": "server_tool_use", "id": srv, "name": "web_search", "input": {"query": prompt}},
        {"type": "web_search_tool_result", "tool_use_id": srv, "content": [
            {"type": "web_search_result", "url": url, "title": title,
             "encrypted_content": "ZW5jcnlwdGVk", "page_age": "1 day ago"}]},
        {"type": "text", "text": f"Here is what I found about {prompt}.", "citations": [
            {"type": "web_search_result_location", "url": url, "title": title,
             "encrypted_index": "aW5kZXg=", "cited_text": f"News about {prompt}"}]},
    ]


def _usage(body: JSON, blocks: list[JSON], server_tool: JSON) -> JSON:
    chars = len(dumps(body.get("messages"))) + len(str(body.get("system") or ""))
    out_tokens = 0
    for b in blocks:
        if b["type"] == "text":
            out_tokens += len(b["text"].split())
        elif b["type"] in ("tool_use", "server_tool_use"):
            out_tokens += max(1, len(dumps(b["input"])) // 4)
    usage: JSON = {"input_tokens": max(1, chars // 4), "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": max(1, out_tokens),
                   "service_tier": "standard"}
    if server_tool["web_search_requests"]:
        usage["server_tool_use"] = server_tool
    return usage


# ---------------------------------------------------------------- streaming


def stream_events(message: JSON, chunk_words: int = 1,
                  error_type: str | None = None) -> list[tuple[str, JSON]]:
    """The SSE events of `message` in Anthropic's order; a ping follows the first block start."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    start_usage.pop("server_tool_use", None)
    events: list[tuple[str, JSON]] = [("message_start", {"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}})]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block, chunk_words)
        if index == 0:
            events.insert(2, ("ping", {"type": "ping"}))
    if error_type:
        first_delta = next(i for i, (n, _) in enumerate(events) if n in (
            "content_block_delta", "content_block_stop"))
        return events[:first_delta + 1] + [("error", {"type": "error", "error": {
            "type": error_type, "message": f"mock {error_type}"}})]
    delta_usage = {"output_tokens": usage["output_tokens"]}
    if "server_tool_use" in usage:
        delta_usage["server_tool_use"] = usage["server_tool_use"]
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
        "usage": delta_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: JSON, chunk_words: int) -> list[tuple[str, JSON]]:
    kind = block["type"]
    deltas: list[JSON] = []
    if kind == "text":
        start: JSON = {"type": "text", "text": ""}
        for citation in block.get("citations") or []:
            deltas.append({"type": "citations_delta", "citation": citation})
        words = re.findall(r"\S+\s*|\s+", block["text"])
        for i in range(0, len(words), chunk_words):
            deltas.append({"type": "text_delta", "text": "".join(words[i:i + chunk_words])})
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        raw = dumps(block["input"]).decode()
        cut = [0, len(raw) // 3, 2 * len(raw) // 3, len(raw)]
        deltas.append({"type": "input_json_delta", "partial_json": ""})
        deltas += [{"type": "input_json_delta", "partial_json": raw[a:b]}
                   for a, b in zip(cut, cut[1:]) if b > a]
    else:
        start = block  # web_search_tool_result arrives whole
    out: list[tuple[str, JSON]] = [("content_block_start", {
        "type": "content_block_start", "index": index, "content_block": start})]
    out += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas]
    out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out
