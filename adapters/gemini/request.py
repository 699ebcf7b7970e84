"""OpenAI Chat Completions / embeddings request -> Gemini generateContent / embedContent request.

Mapping tables: PROVIDERS.md §6.1-§6.4. Gemini rejects unknown JSON fields, so only fields that
are translated here ever reach it; every other OpenAI parameter goes through
`apply_param_policy` (400 naming provider and parameter, or dropped with `drop_unsupported`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from adapters.base import GATEWAY_ONLY_FIELDS, apply_param_policy, with_defaults
from adapters.gemini import wire
from gateway.types import (
    JSON,
    ChatRequest,
    EmbeddingsRequest,
    Target,
    UpstreamRequest,
    dumps,
    loads,
)

# OpenAI fields this adapter translates.
MAPPED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "n", "stop", "presence_penalty", "frequency_penalty", "seed", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "stream", "stream_options", "logprobs", "top_logprobs",
    "reasoning_effort", "web_search_options",
})
# Fields with no effect on the generated answer (end-user ids, OpenAI-side storage and billing
# hints): accepted and not forwarded. Listed in SUPPORT.md.
IGNORED = frozenset({"user", "safety_identifier", "metadata", "store", "service_tier",
                     "prompt_cache_key"})
WEB_SEARCH_TYPES = frozenset({"web_search", "web_search_preview"})
AUDIO_MIME: Mapping[str, str] = MappingProxyType({"wav": "audio/wav", "mp3": "audio/mp3"})


def label(target: Target) -> str:
    return f"{target.provider.name} (gemini)"


def prepare_body(req_body: JSON, target: Target) -> JSON:
    """Route defaults, then the parameter policy over everything this adapter cannot send."""
    body = {k: v for k, v in req_body.items() if k not in GATEWAY_ONLY_FIELDS}
    body = with_defaults(body, target)
    unsupported = sorted(k for k in body if k not in MAPPED and k not in IGNORED)
    if body.get("reasoning_effort") == "none" and is_gemini3(target.model):
        unsupported.insert(0, "reasoning_effort")  # Gemini 3 cannot switch thinking off
    return apply_param_policy(body, target, unsupported, label=label(target))


def is_gemini3(model: str) -> bool:
    return wire.model_path(model).startswith("gemini-3")


def build_chat_request(req: ChatRequest, target: Target) -> UpstreamRequest:
    body = prepare_body(req.body, target)
    payload = build_chat_body(body, target)
    model = wire.model_path(target.model)
    base = f"{wire.base_url(target)}{wire.API_PREFIX}{model}"
    url = f"{base}:streamGenerateContent?alt=sse" if req.stream else f"{base}:generateContent"
    return UpstreamRequest("POST", url, wire.headers(target), dumps(payload), stream=req.stream)


def build_chat_body(body: JSON, target: Target) -> JSON:
    system_parts, contents = convert_messages(body.get("messages") or [], target)
    if not contents:
        raise wire.bad_request(target, "at least one user or assistant message is required",
                               "messages")
    out: JSON = {"contents": contents}
    if system_parts:
        out["systemInstruction"] = {"parts": system_parts}
    tools, tool_config = convert_tools(body, target)
    if tools:
        out["tools"] = tools
    if tool_config:
        out["toolConfig"] = tool_config
    config = generation_config(body, target)
    if config:
        out["generationConfig"] = config
    return out


# ---------------------------------------------------------------- generationConfig


_SIMPLE = (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
           ("n", "candidateCount"), ("presence_penalty", "presencePenalty"),
           ("frequency_penalty", "frequencyPenalty"), ("seed", "seed"))


def generation_config(body: JSON, target: Target) -> JSON:
    gc: JSON = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        gc["maxOutputTokens"] = max_tokens
    for src, dst in _SIMPLE:
        if body.get(src) is not None:
            gc[dst] = body[src]
    stop = body.get("stop")
    if stop:
        gc["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("logprobs"):
        gc["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            gc["logprobs"] = body["top_logprobs"]
    gc.update(response_format(body.get("response_format"), target))
    effort = body.get("reasoning_effort")
    if effort is not None:
        gc["thinkingConfig"] = thinking_config(str(effort), target)
    return gc


def response_format(fmt: Any, target: Target) -> JSON:
    """json_object -> responseMimeType; json_schema -> + responseJsonSchema (full JSON Schema,
    sent unchanged: `additionalProperties`, `strict` schemas etc. survive; PROVIDERS §3.2/§6.1)."""
    if not fmt or fmt.get("type") in (None, "text"):
        return {}
    kind = fmt.get("type")
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise wire.bad_request(target, "response_format.json_schema.schema is required",
                                   "response_format")
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise wire.bad_request(target, f"unsupported response_format type '{kind}'", "response_format")


def thinking_config(effort: str, target: Target) -> JSON:
    if is_gemini3(target.model):
        if effort not in wire.THINKING_LEVELS:
            raise wire.bad_request(target, f"unsupported reasoning_effort '{effort}'",
                                   "reasoning_effort")
        return {"thinkingLevel": effort}
    if effort not in wire.THINKING_BUDGETS:
        raise wire.bad_request(target, f"unsupported reasoning_effort '{effort}'",
                               "reasoning_effort")
    return {"thinkingBudget": wire.THINKING_BUDGETS[effort]}


# ---------------------------------------------------------------- tools


def convert_tools(body: JSON, target: Target) -> tuple[list[JSON], JSON | None]:
    decls: list[JSON] = []
    search = body.get("web_search_options") is not None
    for i, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type")
        if kind == "function":
            decls.append(declaration(tool.get("function") or {}, target, i))
        elif kind in WEB_SEARCH_TYPES:
            search = True
        else:
            raise wire.bad_request(target, f"unsupported tool type '{kind}'", f"tools[{i}]")
    tool_config, allowed = tool_choice(body.get("tool_choice"), decls, target)
    if allowed is not None:
        decls = [d for d in decls if d["name"] in allowed]
    tools: list[JSON] = []
    if decls:
        tools.append({"functionDeclarations": decls})
    if search:
        tools.append({"googleSearch": {}})
    return tools, tool_config if decls else None


def declaration(fn: JSON, target: Target, i: int) -> JSON:
    name = fn.get("name")
    if not name:
        raise wire.bad_request(target, "function tools need a name", f"tools[{i}].function.name")
    out: JSON = {"name": name}
    if fn.get("description"):
        out["description"] = fn["description"]
    params = fn.get("parameters")
    if params:
        key = "parameters" if openapi_subset(params) else "parametersJsonSchema"
        out[key] = params
    return out


def openapi_subset(schema: Any) -> bool:
    """True when `schema` uses only the OpenAPI-3.0 keywords Gemini's `parameters` accepts."""
    if isinstance(schema, list):
        return all(openapi_subset(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    for key, value in schema.items():
        if key not in wire.OPENAPI_SCHEMA_KEYS:
            return False
        if key == "properties":
            if not isinstance(value, dict) or not all(openapi_subset(v) for v in value.values()):
                return False
        elif key in ("items", "anyOf") and not openapi_subset(value):
            return False
        elif key == "type" and not isinstance(value, str):
            return False  # ["string", "null"] is JSON Schema, not OpenAPI 3.0
    return True


def tool_choice(choice: Any, decls: list[JSON], target: Target) -> tuple[JSON | None, set[str] | None]:
    """(toolConfig, names to keep in functionDeclarations or None for all)."""
    if choice is None:
        return None, None
    names = {d["name"] for d in decls}
    if isinstance(choice, str):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        if choice not in modes:
            raise wire.bad_request(target, f"unsupported tool_choice '{choice}'", "tool_choice")
        return {"functionCallingConfig": {"mode": modes[choice]}}, None
    kind = choice.get("type")
    if kind == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise wire.bad_request(target, f"tool_choice names unknown function '{name}'",
                                   "tool_choice")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}, None
    if kind == "allowed_tools":
        spec = choice.get("allowed_tools") or {}
        allowed = [(t.get("function") or {}).get("name") for t in spec.get("tools") or []]
        keep = {str(n) for n in allowed if n in names}
        if spec.get("mode") == "required":
            return {"functionCallingConfig": {"mode": "ANY",
                                              "allowedFunctionNames": sorted(keep)}}, None
        return {"functionCallingConfig": {"mode": "AUTO"}}, keep
    raise wire.bad_request(target, f"unsupported tool_choice type '{kind}'", "tool_choice")


# ---------------------------------------------------------------- messages


def convert_messages(messages: list[JSON], target: Target) -> tuple[list[JSON], list[JSON]]:
    """(systemInstruction parts, contents) with consecutive same-role turns merged."""
    system: list[JSON] = []
    contents: list[JSON] = []
    calls: dict[str, tuple[str, str | None]] = {}  # OpenAI call id -> (name, Gemini id)
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("system", "developer"):
            system += [p for p in text_parts(msg.get("content"), target, i)]
            continue
        if role == "user":
            parts = user_parts(msg.get("content"), target, i)
            append(contents, "user", parts)
        elif role == "assistant":
            append(contents, "model", assistant_parts(msg, target, i, calls))
        elif role in ("tool", "function"):
            append(contents, "user", [function_response(msg, target, i, calls)])
        else:
            raise wire.bad_request(target, f"unsupported message role '{role}'",
                                   f"messages[{i}].role")
    return system, contents


def append(contents: list[JSON], role: str, parts: list[JSON]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": list(parts)})


def text_parts(content: Any, target: Target, i: int) -> list[JSON]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    out: list[JSON] = []
    for j, part in enumerate(content):
        if part.get("type") in ("text", "refusal"):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if text:
                out.append({"text": text})
        else:
            raise wire.bad_request(target, f"content part type '{part.get('type')}' is not "
                                   "allowed in this message", f"messages[{i}].content[{j}]")
    return out


def user_parts(content: Any, target: Target, i: int) -> list[JSON]:
    if content is None or isinstance(content, str):
        return text_parts(content, target, i)
    out: list[JSON] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        where = f"messages[{i}].content[{j}]"
        if kind == "text":
            out += text_parts([part], target, i)
        elif kind == "image_url":
            out.append(wire.image_part(part.get("image_url") or {}, target, where))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = AUDIO_MIME.get(str(audio.get("format")), f"audio/{audio.get('format')}")
            out.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            out.append(wire.file_part(part.get("file") or {}, target, where))
        else:
            raise wire.bad_request(target, f"unsupported content part type '{kind}'", where)
    return out


def assistant_parts(msg: JSON, target: Target, i: int,
                    calls: dict[str, tuple[str, str | None]]) -> list[JSON]:
    parts = text_parts(msg.get("content"), target, i)
    for j, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        where = f"messages[{i}].tool_calls[{j}].function.arguments"
        try:
            args = loads(fn.get("arguments") or "{}")
        except ValueError:
            raise wire.bad_request(target, "tool call arguments are not valid JSON", where) from None
        if not isinstance(args, dict):
            raise wire.bad_request(target, "tool call arguments must be a JSON object", where)
        gid, signature = wire.parse_call_id(str(call.get("id") or ""))
        extra = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        signature = signature or (extra if isinstance(extra, str) else None)
        fc: JSON = {"name": name, "args": args}
        if gid:
            fc["id"] = gid
        part: JSON = {"functionCall": fc}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
        calls[str(call.get("id") or "")] = (name, gid)
    return parts


def function_response(msg: JSON, target: Target, i: int,
                      calls: dict[str, tuple[str, str | None]]) -> JSON:
    gid: str | None = None
    if msg.get("role") == "function":
        name = msg.get("name")
    else:
        name, gid = calls.get(str(msg.get("tool_call_id") or ""), (None, None))
    if not name:
        raise wire.bad_request(target, "tool message does not answer any earlier assistant "
                               "tool call (unknown tool_call_id)", f"messages[{i}].tool_call_id")
    text = "".join(p.get("text", "") for p in text_parts(msg.get("content"), target, i))
    fr: JSON = {"name": name, "response": {"output": tool_output(text)}}
    if gid:
        fr["id"] = gid
    return {"functionResponse": fr}


def tool_output(text: str) -> Any:
    """A JSON object result is passed as an object, anything else as the string (PROVIDERS §6.4)."""
    try:
        value = loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


# ---------------------------------------------------------------- embeddings

EMBED_MAPPED = frozenset({"model", "input", "dimensions", "encoding_format"})


def build_embeddings_request(req: EmbeddingsRequest, target: Target) -> UpstreamRequest:
    body = {k: v for k, v in req.body.items() if k not in GATEWAY_ONLY_FIELDS}
    unsupported = sorted(k for k in body if k not in EMBED_MAPPED and k not in IGNORED)
    body = apply_param_policy(body, target, unsupported, label=label(target))
    model = wire.model_path(target.model)
    texts = embed_texts(req.inputs, target)
    extra: JSON = {}
    if body.get("dimensions") is not None:
        extra["outputDimensionality"] = body["dimensions"]
    one = [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
           for t in texts]
    base = f"{wire.base_url(target)}{wire.API_PREFIX}{model}"
    if len(one) == 1:
        url, payload = f"{base}:embedContent", one[0]
    else:
        url, payload = f"{base}:batchEmbedContents", {"requests": one}
    return UpstreamRequest("POST", url, wire.headers(target), dumps(payload))


def embed_texts(inputs: Iterable[Any], target: Target) -> list[str]:
    texts: list[str] = []
    for i, value in enumerate(inputs):
        if not isinstance(value, str):
            raise wire.bad_request(target, "embeddings input must be text (token arrays are "
                                   "not supported)", f"input[{i}]")
        texts.append(value)
    if not texts:
        raise wire.bad_request(target, "embeddings input is empty", "input")
    return texts
