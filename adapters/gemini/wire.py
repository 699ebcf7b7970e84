"""Gemini (generativelanguage v1beta) wire constants and small shared helpers (no I/O, no state).

Sources: /work/shared/reference/PROVIDERS.md §3 (Gemini API) and §6 (mapping tables), checked
against the official `google-genai` SDK (`google/genai/types.py`, `models.py`).
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import InvalidRequest
from gateway.types import JSON, Target, Usage, dumps, loads, token_count

PROVIDER_KIND = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_PREFIX = "/v1beta/models/"
API_KEY_HEADER = "x-goog-api-key"

# finishReason -> OpenAI finish_reason (PROVIDERS §6.5). RECITATION is reported as content_filter
# (the answer was withheld because it quoted a source), consistently in both response paths.
FINISH_REASONS: Mapping[str, str] = MappingProxyType({
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "TOO_MANY_TOOL_CALLS": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "stop",
    "NO_IMAGE": "stop",
})

# google.rpc status -> HTTP status (PROVIDERS §3.6); used when the body's `code` is missing.
STATUS_HTTP: Mapping[str, int] = MappingProxyType({
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
})

# Keywords of the OpenAPI-3.0 subset Gemini accepts in `functionDeclarations[].parameters`
# (google.genai types.Schema). A tool schema using anything else is sent unchanged as
# `parametersJsonSchema` (full JSON Schema) instead, so nothing is stripped (PROVIDERS §3.3).
OPENAPI_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
})

# OpenAI reasoning_effort -> Gemini 2.x thinkingBudget (Google's own OpenAI-compat mapping for
# low/medium/high; none disables thinking). Gemini 3 models take the level name (thinkingLevel).
THINKING_BUDGETS: Mapping[str, int] = MappingProxyType({
    "none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576,
})
THINKING_LEVELS = frozenset({"minimal", "low", "medium", "high"})


def provider_label(target: Target) -> str:
    return f"gemini (provider '{target.provider.name}')"


def base_url(target: Target) -> str:
    return (target.provider.base_url or DEFAULT_BASE_URL).rstrip("/")


def model_path(model: str) -> str:
    """`gemini-2.5-flash` and `models/gemini-2.5-flash` both name the same model."""
    return model.removeprefix("models/")


def headers(target: Target) -> dict[str, str]:
    out = {"content-type": "application/json"}
    out.update(target.provider.headers)
    out[target.provider.auth_header or API_KEY_HEADER] = target.provider.api_key
    return out


def bad_request(target: Target, message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"{provider_label(target)}: {message}", param=param)


# ---------------------------------------------------------------- usage (PROVIDERS §6.6)


def usage_from(meta: Mapping[str, Any] | None) -> Usage | None:
    if not meta:
        return None
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=token_count(token_count(meta.get("promptTokenCount"))
                                  + token_count(meta.get("toolUsePromptTokenCount"))),
        completion_tokens=token_count(token_count(meta.get("candidatesTokenCount")) + thoughts),
        cached_tokens=token_count(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


# ---------------------------------------------------------------- tool-call ids
#
# Gemini has no reliable call ids and attaches an opaque `thoughtSignature` to (the first)
# functionCall part, which must come back verbatim on the next turn. OpenAI clients echo only the
# tool call `id`, so that is where both travel:
#   * plain call:                 `call_<24 hex>` (deterministic hash of response id, position,
#                                 name and arguments)
#   * with a Gemini id/signature: `gcall_<base64url(JSON {"h": hash, "id"?: gemini id,
#                                 "ts"?: thoughtSignature})>`
# Both forms use only [A-Za-z0-9_-], so other providers (Anthropic) accept them too. On the way
# in a tool call may also carry the signature as `extra_content.google.thought_signature`
# (the convention of Google's own OpenAI-compatible endpoint).

ENVELOPE_PREFIX = "gcall_"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_call_id(seed: str, call_id: str | None, signature: str | None) -> str:
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]
    if not call_id and not signature:
        return f"call_{digest}"
    env: JSON = {"h": digest}
    if call_id:
        env["id"] = call_id
    if signature:
        env["ts"] = signature
    return ENVELOPE_PREFIX + _b64url(dumps(env))


def parse_call_id(value: str) -> tuple[str | None, str | None]:
    """(Gemini functionCall id, thoughtSignature) carried by an id from `make_call_id`."""
    if not value.startswith(ENVELOPE_PREFIX):
        return None, None
    try:
        env = loads(_unb64url(value[len(ENVELOPE_PREFIX):]))
    except (ValueError, TypeError):
        return None, None
    if not isinstance(env, dict):
        return None, None
    cid, sig = env.get("id"), env.get("ts")
    return (cid if isinstance(cid, str) else None), (sig if isinstance(sig, str) else None)


def call_seed(response_id: str, candidate: int, ordinal: int, name: str, args: Any) -> str:
    return f"{response_id}|{candidate}|{ordinal}|{name}|{dumps(args).decode()}"


# ---------------------------------------------------------------- media parts (PROVIDERS §6.3)


def split_data_url(url: str) -> tuple[str, str] | None:
    """`data:<mime>;base64,<b64>` -> (mime, b64); None when not a base64 data URL."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    return head[5:-7] or "application/octet-stream", data


def image_part(image: JSON, target: Target, where: str) -> JSON:
    url = str(image.get("url") or "")
    if url.startswith("data:"):
        split = split_data_url(url)
        if split is None:
            raise bad_request(target, "image data URLs must be base64", where)
        return {"inlineData": {"mimeType": split[0], "data": split[1]}}
    if url.startswith(("https://", "http://", "gs://")):
        return file_data(url)
    raise bad_request(target, "image_url must be a data: or https: URL", where)


# File extension -> MIME type for remote files and named inline files (a fixed table, not the
# `mimetypes` module, whose answers depend on the machine's /etc/mime.types).
MIME_BY_EXTENSION: Mapping[str, str] = MappingProxyType({
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
    "txt": "text/plain", "mp3": "audio/mp3", "wav": "audio/wav", "flac": "audio/flac",
    "mp4": "video/mp4", "mov": "video/mov", "webm": "video/webm",
})


def guess_mime(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    return MIME_BY_EXTENSION.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None


def file_data(uri: str) -> JSON:
    """Remote file by URI; the MIME type is guessed from the path's extension (no I/O)."""
    mime = guess_mime(urlsplit(uri).path)
    out: JSON = {"fileUri": uri}
    if mime:
        out = {"mimeType": mime, "fileUri": uri}
    return {"fileData": out}


def file_part(file: JSON, target: Target, where: str) -> JSON:
    data = file.get("file_data")
    if isinstance(data, str) and data:
        split = split_data_url(data)
        if split is None:
            mime = guess_mime(str(file.get("filename") or ""))
            split = (mime or "application/pdf", data)
        return {"inlineData": {"mimeType": split[0], "data": split[1]}}
    file_id = str(file.get("file_id") or "")
    if file_id.startswith("files/"):
        return file_data(f"{base_url(target)}/v1beta/{file_id}")
    if file_id.startswith(("https://", "gs://")):
        return file_data(file_id)
    raise bad_request(target, "file parts need file_data or a Gemini Files API file_id "
                           "(files/...)", where)
