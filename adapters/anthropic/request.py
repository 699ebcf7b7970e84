"""OpenAI Chat Completions request -> Anthropic Messages request (PROVIDERS §6.1, §6.2, §6.4)."""
from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Mapping

from adapters.anthropic.wire import (
    API_VERSION,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    JSON_TOOL_NAME,
    IMAGE_MEDIA_TYPES,
    MESSAGES_PATH,
    WEB_SEARCH_TOOL_TYPE,
    tool_id,
)
from adapters.base import GATEWAY_ONLY_FIELDS, apply_param_policy, with_defaults
from gateway.errors import InvalidRequest, UnsupportedParameter
from gateway.types import JSON, ChatRequest, Target, UpstreamRequest, dumps, loads

logger = logging.getLogger(__name__)

# OpenAI fields Anthropic has no equivalent for, with the value that means "not used" (a client
# sending the neutral value, e.g. `n: 1` or `logprobs: false`, is not refused).
_UNSUPPORTED_NEUTRAL: Mapping[str, Any] = MappingProxyType({
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "seed": None,
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
    "reasoning_effort": None,
    "store": False,
    "metadata": {},
    "functions": None,
    "function_call": None,
    "verbosity": None,
})
# Fields read below (or harmless client hints) that must not reach the "unknown field" log.
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "stop", "stream", "stream_options", "user", "safety_identifier", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "web_search_options", "service_tier",
    "prompt_cache_key",
}) | GATEWAY_ONLY_FIELDS


def build_request(req: ChatRequest, target: Target) -> UpstreamRequest:
    body = build_body(req, target)
    return UpstreamRequest("POST", messages_url(target), build_headers(target), dumps(body),
                           stream=bool(body.get("stream")))


def messages_url(target: Target) -> str:
    base = (target.provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    if base.endswith("/v1"):  # tolerate an OpenAI-style base URL
        base = base[:-3]
    return base + MESSAGES_PATH


def build_headers(target: Target) -> dict[str, str]:
    p = target.provider
    auth = (p.auth_header or "x-api-key").lower()
    key = f"Bearer {p.api_key}" if auth == "authorization" else p.api_key
    headers = {auth: key, "anthropic-version": API_VERSION, "content-type": "application/json"}
    headers.update(p.headers)
    return headers


def build_body(req: ChatRequest, target: Target) -> JSON:
    src = with_defaults(req.body, target)
    _policy(src, target)
    system, messages = convert_messages(src.get("messages") or [])
    out: JSON = {"model": target.model, "max_tokens": _max_tokens(src), "messages": messages}
    _sampling(src, target, out)
    tools = _tools(src)
    _response_format(src, target, system, tools, out)
    if tools:
        out["tools"] = tools
        choice = _tool_choice(src, tools)
        if choice is not None:
            out.setdefault("tool_choice", choice)
    if system:
        out["system"] = system[0]["text"] if _plain_single(system) else system
    if req.stream or src.get("stream"):
        out["stream"] = True
    return out


def _plain_single(blocks: list[JSON]) -> bool:
    return len(blocks) == 1 and set(blocks[0]) == {"type", "text"}


def _policy(src: JSON, target: Target) -> None:
    """Reject (or, with drop_unsupported, ignore) fields Anthropic cannot honour."""
    meaningful = {k: src[k] for k, neutral in _UNSUPPORTED_NEUTRAL.items()
                  if src.get(k) is not None and src[k] != neutral}
    if src.get("service_tier") not in (None, "auto", "default"):
        meaningful["service_tier"] = src["service_tier"]
    if meaningful:
        apply_param_policy(meaningful, target, list(meaningful))
    unknown = [k for k in src if k not in _HANDLED and k not in _UNSUPPORTED_NEUTRAL]
    if unknown:
        logger.debug("anthropic adapter ignores unknown request fields: %s", sorted(unknown))


def _max_tokens(src: JSON) -> int:
    value = src.get("max_completion_tokens")
    if value is None:
        value = src.get("max_tokens")
    return int(value) if value is not None else DEFAULT_MAX_TOKENS


def _sampling(src: JSON, target: Target, out: JSON) -> None:
    temperature = src.get("temperature")
    if temperature is not None:
        if temperature > 1:
            if not target.drop_unsupported:
                raise UnsupportedParameter(
                    f"provider '{target.provider.name}' (anthropic) does not support temperature "
                    f"{temperature}: Anthropic accepts 0 to 1 (set drop_unsupported: true on the "
                    f"route to drop it)", param="temperature")
        else:
            out["temperature"] = temperature
    for name in ("top_p", "top_k"):
        if src.get(name) is not None:
            out[name] = src[name]
    stop = src.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        out["stop_sequences"] = list(stop)
    user = src.get("user") or src.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": str(user)}


# ---------------------------------------------------------------- tools


def _tools(src: JSON) -> list[JSON]:
    tools: list[JSON] = []
    for tool in src.get("tools") or []:
        kind = tool.get("type")
        if kind == "function":
            tools.append(_function_tool(tool.get("function") or {}))
        elif kind in ("web_search", "web_search_preview"):
            tools.append(_web_search_tool(tool))
        else:
            raise UnsupportedParameter(
                f"anthropic adapter does not support tools of type '{kind}'", param="tools")
    options = src.get("web_search_options")
    if options is not None and not any(t.get("type") == WEB_SEARCH_TOOL_TYPE for t in tools):
        location = (options.get("user_location") or {}).get("approximate")
        tools.append(_web_search_tool({"user_location": location} if location else {}))
    return _filter_allowed(tools, src.get("tool_choice"))


def _function_tool(fn: JSON) -> JSON:
    if not fn.get("name"):
        raise InvalidRequest("every function tool needs a name", param="tools")
    out: JSON = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if fn.get("strict") is not None:
        out["strict"] = bool(fn["strict"])
    return out


def _web_search_tool(tool: JSON) -> JSON:
    """OpenAI `{"type": "web_search"}` (Responses-style options) -> Anthropic's server tool."""
    out: JSON = {"type": WEB_SEARCH_TOOL_TYPE, "name": "web_search"}
    domains = (tool.get("filters") or {}).get("allowed_domains") or tool.get("allowed_domains")
    if domains:
        out["allowed_domains"] = list(domains)
    for key in ("blocked_domains", "max_uses"):
        if tool.get(key) is not None:
            out[key] = tool[key]
    loc = tool.get("user_location")
    if loc:
        fields = {k: loc[k] for k in ("city", "region", "country", "timezone") if loc.get(k)}
        out["user_location"] = {"type": "approximate", **fields}
    return out


def _filter_allowed(tools: list[JSON], choice: Any) -> list[JSON]:
    """tool_choice `allowed_tools` restricts the offered function tools to the listed names."""
    if not (isinstance(choice, dict) and choice.get("type") == "allowed_tools"):
        return tools
    listed = (choice.get("allowed_tools") or {}).get("tools") or []
    names = {(t.get("function") or {}).get("name") or t.get("name") for t in listed}
    return [t for t in tools if "input_schema" not in t or t["name"] in names]


def _tool_choice(src: JSON, tools: list[JSON]) -> JSON | None:
    choice = src.get("tool_choice")
    out: JSON | None
    if choice is None or choice == "auto":
        out = {"type": "auto"} if choice == "auto" else None
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = (choice.get("allowed_tools") or {}).get("mode", "auto")
        out = {"type": "any" if mode == "required" else "auto"}
    else:
        raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    if src.get("parallel_tool_calls") is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


# ---------------------------------------------------------------- structured output


def _response_format(
    src: JSON, target: Target, system: list[JSON], tools: list[JSON], out: JSON
) -> None:
    """json_schema -> native `output_config.format` (GA; PROVIDERS §2.6), or with provider option
    `structured_output: tool` a forced synthetic tool for models without it. json_object -> a
    system instruction (Anthropic has no JSON mode)."""
    fmt = src.get("response_format") or {}
    kind = fmt.get("type")
    if kind in (None, "text"):
        return
    if kind == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        return
    if kind != "json_schema":
        raise InvalidRequest(f"unsupported response_format type '{kind}'", param="response_format")
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema") or {"type": "object"}
    if target.provider.options.get("structured_output", "native") == "tool":
        tool: JSON = {"name": JSON_TOOL_NAME, "input_schema": schema}
        tool["description"] = spec.get("description") or "Return the answer as this JSON object."
        tools.append(tool)
        out["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}
    else:
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}


# ---------------------------------------------------------------- messages (PROVIDERS §6.2-§6.4)


def convert_messages(messages: list[Any]) -> tuple[list[JSON], list[JSON]]:
    """OpenAI messages -> (system text blocks, alternating Anthropic turns).

    system/developer messages go to the top-level system in order; tool results become
    tool_result blocks of a user turn; consecutive same-role turns are merged; empty or
    whitespace-only text is dropped (Anthropic rejects it).
    """
    system: list[JSON] = []
    turns: list[tuple[str, list[JSON]]] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role in ("system", "developer"):
            system += _text_blocks(m.get("content"), f"messages[{i}]")
        elif role == "user":
            _append(turns, "user", _user_blocks(m.get("content"), f"messages[{i}]"))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(m, f"messages[{i}]"))
        elif role == "tool":
            _append(turns, "user", [_tool_result(m, f"messages[{i}]")])
        else:
            raise InvalidRequest(f"anthropic adapter does not support message role '{role}'",
                                 param=f"messages[{i}].role")
    return system, [_render(role, blocks) for role, blocks in turns]


def _append(turns: list[tuple[str, list[JSON]]], role: str, blocks: list[JSON]) -> None:
    if not blocks:
        return
    if turns and turns[-1][0] == role:
        turns[-1][1].extend(blocks)
    else:
        turns.append((role, blocks))


def _render(role: str, blocks: list[JSON]) -> JSON:
    if role == "user":  # tool_result blocks must open the user turn that answers tool_use
        blocks = ([b for b in blocks if b["type"] == "tool_result"]
                  + [b for b in blocks if b["type"] != "tool_result"])
    if _plain_single(blocks):
        return {"role": role, "content": blocks[0]["text"]}
    return {"role": role, "content": blocks}


def _text_block(text: Any, part: JSON | None = None) -> list[JSON]:
    if not isinstance(text, str) or not text.strip():
        return []
    block: JSON = {"type": "text", "text": text}
    if part and part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return [block]


def _text_blocks(value: Any, where: str) -> list[JSON]:
    if value is None or isinstance(value, str):
        return _text_block(value)
    blocks: list[JSON] = []
    for j, part in enumerate(value):
        if part.get("type") not in ("text", "refusal"):
            raise InvalidRequest(f"only text content is allowed here, got '{part.get('type')}'",
                                 param=f"{where}.content[{j}]")
        blocks += _text_block(part.get("text", part.get("refusal")), part)
    return blocks


def _user_blocks(value: Any, where: str) -> list[JSON]:
    if value is None or isinstance(value, str):
        return _text_block(value)
    blocks: list[JSON] = []
    for j, part in enumerate(value):
        kind = part.get("type")
        if kind == "text":
            blocks += _text_block(part.get("text"), part)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_image_block(str(url or ""), f"{where}.content[{j}]"))
        elif kind == "file":
            blocks.append(_document_block(part.get("file") or {}, f"{where}.content[{j}]"))
        else:
            raise InvalidRequest(f"anthropic does not support '{kind}' content parts",
                                 param=f"{where}.content[{j}]")
    return blocks


def _data_url(url: str, where: str) -> tuple[str, str]:
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise InvalidRequest("data: URLs must be base64 (data:<mime>;base64,<data>)", param=where)
    return head[5:-7].lower(), data


def _image_block(url: str, where: str) -> JSON:
    if url.startswith("data:"):
        mime, data = _data_url(url, where)
        if mime not in IMAGE_MEDIA_TYPES:
            raise InvalidRequest(f"anthropic accepts jpeg, png, gif and webp images, not '{mime}'",
                                 param=where)
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url must be a data: URL or an http(s) URL", param=where)


def _document_block(file: JSON, where: str) -> JSON:
    data = file.get("file_data") or ""
    if not data:
        raise InvalidRequest("anthropic needs file_data (file_id is not supported)", param=where)
    mime, b64 = _data_url(data, where) if data.startswith("data:") else ("application/pdf", data)
    if mime != "application/pdf":
        raise InvalidRequest(f"anthropic accepts PDF files only, not '{mime}'", param=where)
    return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": b64}}


def _assistant_blocks(m: JSON, where: str) -> list[JSON]:
    blocks = _text_blocks(m.get("content"), where)
    for j, call in enumerate(m.get("tool_calls") or []):
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = loads(raw) if isinstance(raw, str) else raw
        except ValueError:  # orjson.JSONDecodeError
            args = None
        if not isinstance(args, dict):
            raise InvalidRequest("tool call arguments must be a JSON object for anthropic",
                                 param=f"{where}.tool_calls[{j}].function.arguments")
        blocks.append({"type": "tool_use", "id": tool_id(str(call.get("id") or f"call_{j}")),
                       "name": fn.get("name"), "input": args})
    return blocks


def _tool_result(m: JSON, where: str) -> JSON:
    if not m.get("tool_call_id"):
        raise InvalidRequest("tool messages need a tool_call_id", param=f"{where}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": tool_id(str(m["tool_call_id"]))}
    value = m.get("content")
    if isinstance(value, str):
        if value:
            block["content"] = value
    elif value:
        parts = _text_blocks(value, where)
        if parts:
            block["content"] = parts
    return block
