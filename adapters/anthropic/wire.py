"""Anthropic Messages wire constants and small shared mappings (no I/O, no state).

Sources: /work/shared/reference/PROVIDERS.md §2 (Anthropic Messages) and §6 (mapping tables),
checked against the official `anthropic` SDK types.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from gateway.types import Target, Usage, token_count

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"

# Anthropic requires max_tokens and has no default; used when neither the client nor the route
# (target.defaults["max_tokens"]) gives one. 4096 is what gateways commonly use (PROVIDERS §2.2).
DEFAULT_MAX_TOKENS = 4096

# Name of the synthetic tool used to emulate json_schema output on models without native
# structured output (provider option `structured_output: tool`, PROVIDERS §2.6).
JSON_TOOL_NAME = "json_response"

# The server tool Anthropic runs itself for OpenAI-style `{"type": "web_search"}` tools.
WEB_SEARCH_TOOL_TYPE = "web_search_20250305"

JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object only: no prose before or after it and no "
    "markdown code fences."
)

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# stop_reason -> OpenAI finish_reason (PROVIDERS §6.5).
FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}

# error.type -> the HTTP status Anthropic uses for it (PROVIDERS §2.9); used for in-stream errors
# and for bodies whose status is missing or inconsistent.
ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_TOOL_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def tool_id(value: str) -> str:
    """Anthropic tool ids must match ^[a-zA-Z0-9_-]+$; ids minted elsewhere (`functions.x:0`) are
    rewritten the same way in `tool_use.id` and `tool_result.tool_use_id` so pairs still match."""
    if _TOOL_ID_OK.match(value):
        return value
    return _TOOL_ID_BAD_CHARS.sub("_", value) or "toolu_empty"


def provider_label(target: Target) -> str:
    return f"anthropic (provider '{target.provider.name}')"


def usage_from(raw: Mapping[str, Any] | None) -> Usage:
    """Anthropic usage -> canonical Usage (PROVIDERS §6.6).

    prompt = input + cache read + cache creation (`input_tokens` excludes cached tokens);
    completion = output_tokens (already includes thinking); cached = cache read; reasoning from
    `output_tokens_details.thinking_tokens` when reported.
    """
    if not raw:
        return Usage()
    read = token_count(raw.get("cache_read_input_tokens"))
    write = token_count(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    if not isinstance(details, Mapping):
        details = {}
    return Usage(
        prompt_tokens=token_count(token_count(raw.get("input_tokens")) + read + write),
        completion_tokens=token_count(raw.get("output_tokens")),
        cached_tokens=read,
        reasoning_tokens=token_count(details.get("thinking_tokens")),
    )
