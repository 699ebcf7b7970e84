"""Gemini GenerateContentResponse / embeddings response -> OpenAI shapes.

Shared by the non-streaming path and the stream decoder (parts, finish reasons, citations and
logprobs translate the same way in both). Mapping tables: PROVIDERS.md §6.4-§6.6.
"""
from __future__ import annotations

import base64
import struct
from typing import Any

from adapters.gemini import wire
from gateway.errors import UpstreamProtocolError
from gateway.types import (
    JSON,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    RawResponse,
    Target,
    Usage,
    dumps,
    token_count,
)


def parse_chat_response(raw: RawResponse, req: ChatRequest, target: Target) -> ChatResponse:
    data = raw.json()
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{wire.provider_label(target)} answered a body that is not "
                                    "a JSON object", provider=target.provider.name,
                                    upstream_status=raw.status)
    parallel = req.body.get("parallel_tool_calls") is not False
    return translate(data, parallel)


def translate(data: JSON, parallel: bool = True) -> ChatResponse:
    response_id = str(data.get("responseId") or "")
    choices: list[JSON] = []
    for pos, cand in enumerate(data.get("candidates") or []):
        index = int(cand.get("index") or pos)
        message, n_calls = candidate_message(cand, response_id, parallel)
        choice: JSON = {"index": index, "message": message,
                        "finish_reason": finish_reason(cand.get("finishReason"), n_calls > 0)}
        logprobs = convert_logprobs(cand.get("logprobsResult"))
        choice["logprobs"] = logprobs
        choices.append(choice)
    if not choices:
        choices.append(blocked_choice(data.get("promptFeedback") or {}))
    usage = wire.usage_from(data.get("usageMetadata"))
    body: JSON = {"object": "chat.completion", "choices": choices}
    if response_id:
        body["id"] = f"chatcmpl-{response_id}"
    if usage is not None:
        body["usage"] = usage.to_openai()
    return ChatResponse(body=body, usage=usage)


def blocked_choice(feedback: JSON) -> JSON:
    """No candidates: the prompt was blocked (promptFeedback.blockReason) -> content_filter."""
    reason = feedback.get("blockReason") or "OTHER"
    note = f"prompt blocked by gemini: {reason}"
    if feedback.get("blockReasonMessage"):
        note += f" ({feedback['blockReasonMessage']})"
    return {"index": 0, "finish_reason": "content_filter", "logprobs": None,
            "message": {"role": "assistant", "content": None, "refusal": note}}


def finish_reason(reason: str | None, has_calls: bool) -> str:
    mapped = wire.FINISH_REASONS.get(reason or "STOP", "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def candidate_message(cand: JSON, response_id: str, parallel: bool) -> tuple[JSON, int]:
    parts = (cand.get("content") or {}).get("parts") or []
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    for part in parts:
        if "functionCall" in part:
            if parallel or not calls:
                calls.append(tool_call(part, response_id, int(cand.get("index") or 0), len(calls)))
        elif "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
    content = "".join(texts)
    message: JSON = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    annotations = citations(cand.get("groundingMetadata"), content)
    if annotations:
        message["annotations"] = annotations
    return message, len(calls)


def tool_call(part: JSON, response_id: str, candidate: int, ordinal: int) -> JSON:
    fc = part.get("functionCall") or {}
    name = str(fc.get("name") or "")
    args = fc.get("args") or {}
    seed = wire.call_seed(response_id, candidate, ordinal, name, args)
    call_id = wire.make_call_id(seed, fc.get("id"), part.get("thoughtSignature"))
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": dumps(args).decode()}}


# ---------------------------------------------------------------- grounding -> url_citation


def citations(grounding: JSON | None, text: str) -> list[JSON]:
    """groundingMetadata (Google Search) -> OpenAI `annotations` of type url_citation.

    Segment offsets are UTF-8 byte offsets; OpenAI's are character offsets into the content, so
    the segment's own text is located in the content when given, else the bytes are converted.
    """
    if not grounding:
        return []
    chunks = grounding.get("groundingChunks") or []
    out: list[JSON] = []
    used: set[int] = set()
    raw = text.encode("utf-8")
    for support in grounding.get("groundingSupports") or []:
        start, end = char_span(support.get("segment") or {}, text, raw)
        for idx in support.get("groundingChunkIndices") or []:
            web = chunks[idx].get("web") if 0 <= idx < len(chunks) else None
            if web and web.get("uri"):
                used.add(idx)
                out.append(url_citation(web, start, end))
    for idx, chunk in enumerate(chunks):
        web = chunk.get("web")
        if idx not in used and web and web.get("uri"):
            out.append(url_citation(web, 0, len(text)))
    return out


def char_span(segment: JSON, text: str, raw: bytes) -> tuple[int, int]:
    seg_text = segment.get("text")
    start_b = int(segment.get("startIndex") or 0)
    if seg_text:
        guess = len(raw[:start_b].decode("utf-8", errors="ignore"))
        pos = text.find(seg_text, max(0, guess - len(seg_text)))
        if pos < 0:
            pos = text.find(seg_text)
        if pos >= 0:
            return pos, pos + len(seg_text)
    end_b = int(segment.get("endIndex") or start_b)
    return (len(raw[:start_b].decode("utf-8", errors="ignore")),
            len(raw[:end_b].decode("utf-8", errors="ignore")))


def url_citation(web: JSON, start: int, end: int) -> JSON:
    uri = str(web.get("uri"))
    return {"type": "url_citation", "url_citation": {
        "start_index": start, "end_index": end, "url": uri,
        "title": str(web.get("title") or web.get("domain") or uri)}}


# ---------------------------------------------------------------- logprobs


def convert_logprobs(result: JSON | None) -> JSON | None:
    """logprobsResult -> OpenAI choice.logprobs {content: [...]} (refusal left null)."""
    if not result:
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content: list[JSON] = []
    for i, cand in enumerate(chosen):
        entry = token_logprob(cand)
        top = tops[i].get("candidates") or [] if i < len(tops) else []
        entry["top_logprobs"] = [token_logprob(t) for t in top]
        content.append(entry)
    return {"content": content, "refusal": None}


def token_logprob(cand: JSON) -> JSON:
    token = str(cand.get("token") or "")
    return {"token": token, "logprob": float(cand.get("logProbability") or 0.0),
            "bytes": list(token.encode("utf-8"))}


# ---------------------------------------------------------------- embeddings


def parse_embeddings_response(raw: RawResponse, req: EmbeddingsRequest,
                              target: Target) -> EmbeddingsResponse:
    data = raw.json()
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{wire.provider_label(target)} answered an embeddings body "
                                    "that is not a JSON object", provider=target.provider.name,
                                    upstream_status=raw.status)
    vectors = data.get("embeddings")
    if vectors is None and isinstance(data.get("embedding"), dict):
        vectors = [data["embedding"]]
    if not isinstance(vectors, list):
        raise UpstreamProtocolError(f"{wire.provider_label(target)} answered no embeddings",
                                    provider=target.provider.name, upstream_status=raw.status)
    b64 = req.body.get("encoding_format") == "base64"
    items = [{"object": "embedding", "index": i,
              "embedding": encode_vector(v.get("values") or [], b64)}
             for i, v in enumerate(vectors)]
    usage = embeddings_usage(data.get("usageMetadata"), req.inputs)
    return EmbeddingsResponse(
        body={"object": "list", "data": items, "model": req.model,
              "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}},
        usage=usage)


def encode_vector(values: list[float], b64: bool) -> Any:
    """OpenAI's base64 encoding is the little-endian float32 array, base64-encoded."""
    if not b64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def embeddings_usage(meta: JSON | None, inputs: list[Any]) -> Usage:
    """Gemini reports embedding tokens only sometimes (usageMetadata.promptTokenCount); else the
    count is estimated at 4 characters per token so the request is still accounted for."""
    if meta and meta.get("promptTokenCount") is not None:
        return Usage(prompt_tokens=token_count(meta["promptTokenCount"]))
    return Usage(prompt_tokens=sum((len(str(t)) + 3) // 4 for t in inputs))
