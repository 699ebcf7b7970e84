"""Request validation with the OpenAI error shape; `param` names the offending field.

Only what the gateway must know is checked; fields it does not know pass through unchanged.
"""
from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.types import ChatRequest, EmbeddingsRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
GATEWAY_FIELDS = ("observability",)
_RANGES = (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("presence_penalty", -2.0, 2.0),
           ("frequency_penalty", -2.0, 2.0))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _bad(msg: str, param: str) -> InvalidRequest:
    return InvalidRequest(msg, param=param)


def _check_message(i: int, m: Any) -> None:
    p = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(f"{p} must be an object", p)
    role = m.get("role")
    if role not in ROLES:
        raise _bad(f"{p}.role must be one of system, developer, user, assistant, tool; "
                   f"got {role!r}", f"{p}.role")
    content = m.get("content")
    if content is None:
        if role == "assistant" and (m.get("tool_calls") or m.get("function_call")):
            pass
        elif role != "assistant" or "content" not in m and not m.get("tool_calls"):
            raise _bad(f"{p}.content is required for role '{role}'", f"{p}.content")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{p}.content[{j}] must be an object with a 'type'",
                           f"{p}.content[{j}]")
    elif not isinstance(content, str):
        raise _bad(f"{p}.content must be a string or an array of content parts", f"{p}.content")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise _bad(f"{p}.tool_call_id is required for role 'tool'", f"{p}.tool_call_id")
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise _bad(f"{p}.tool_calls must be an array", f"{p}.tool_calls")
        for j, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"{p}.tool_calls[{j}].function.name is required",
                           f"{p}.tool_calls[{j}].function")


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _bad("tools must be an array", "tools")
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("type"), str):
            raise _bad(f"tools[{i}] must be an object with a 'type'", f"tools[{i}]")
        if t["type"] == "function":
            fn = t.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _bad(f"tools[{i}].function.name is required", f"tools[{i}].function.name")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _bad(f"tools[{i}].function.parameters must be a JSON Schema object",
                           f"tools[{i}].function.parameters")


def chat_request(body: Any, default_model: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    model = body.get("model")
    if model is None or model == "":
        if not default_model:
            raise _bad("model is required (this gateway has no default_model)", "model")
        model = default_model
    elif not isinstance(model, str):
        raise _bad("model must be a string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages is required and must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        _check_message(i, m)
    for name, lo, hi in _RANGES:
        v = body.get(name)
        if v is not None and (not _num(v) or not lo <= v <= hi):
            raise _bad(f"{name} must be a number between {lo:g} and {hi:g}; got {v!r}", name)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(name)
        if v is not None and not _pos_int(v):
            raise _bad(f"{name} must be a positive integer; got {v!r}", name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not 1 <= len(stop) <= 4 or \
                not all(isinstance(s, str) for s in stop):
            raise _bad("stop must be a string or an array of at most 4 strings", "stop")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream must be a boolean", "stream")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise _bad("stream_options must be an object", "stream_options")
    if body.get("tools") is not None:
        _check_tools(body["tools"])
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in
                           ("text", "json_object", "json_schema")):
        raise _bad("response_format.type must be text, json_object or json_schema",
                   "response_format")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("user must be a string", "user")
    for f in GATEWAY_FIELDS:
        if f in body:
            body = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
            break
    return ChatRequest(body=body, model=model, stream=bool(stream))


def embeddings_request(body: Any, default_model: str) -> EmbeddingsRequest:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise _bad("model is required", "model")
    inp = body.get("input")
    ok = isinstance(inp, str) and inp != "" or (
        isinstance(inp, list) and 1 <= len(inp) <= 2048 and
        (all(isinstance(x, str) and x for x in inp) or all(isinstance(x, int) for x in inp) or
         all(isinstance(x, list) and x and all(isinstance(y, int) for y in x) for x in inp)))
    if not ok:
        raise _bad("input must be a non-empty string, an array of 1-2048 strings, or token "
                   "arrays", "input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise _bad("encoding_format must be 'float' or 'base64'", "encoding_format")
    if body.get("dimensions") is not None and not _pos_int(body["dimensions"]):
        raise _bad("dimensions must be a positive integer", "dimensions")
    body = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    return EmbeddingsRequest(body=body, model=model)
