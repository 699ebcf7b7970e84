"""The fake Gemini upstream's replies, derived from the request only (no I/O): text, function
calls with thought signatures, grounded search answers, JSON output, usage and stream chunks.
See `gateway/mockserver/gemini.py` for the rules."""
from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

from gateway.mockserver.replies import sample
from gateway.types import JSON, dumps



def parts_of(content: JSON) -> list[JSON]:
    return [p for p in content.get("parts") or [] if isinstance(p, dict)]


def last_user_text(body: JSON) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in parts_of(content) if isinstance(p.get("text"), str)]
            if texts:
                return " ".join(texts).strip()
    return ""


def _declarations(body: JSON) -> list[JSON]:
    out: list[JSON] = []
    for tool in body.get("tools") or []:
        out += tool.get("functionDeclarations") or []
    return out


def pick_function(body: JSON, prompt: str) -> JSON | None:
    decls = _declarations(body)
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    if not decls or mode == "NONE":
        return None
    allowed = config.get("allowedFunctionNames")
    if allowed:
        decls = [d for d in decls if d.get("name") in allowed] or decls
    if mode == "ANY":
        return decls[0]
    low = prompt.lower()
    for decl in decls:
        name = str(decl.get("name", ""))
        words = [w for w in re.split(r"[_\W]+", name.lower()) if len(w) > 3]
        if name.lower() in low or any(w in low for w in words):
            return decl
    return None


def _signature(seed: str) -> str:
    return base64.b64encode(b"\x12\x0a" + hashlib.sha256(seed.encode()).digest()).decode()


def _grounded(prompt: str) -> tuple[str, JSON]:
    first = f"Here is what I found about {prompt}."
    second = "Two sources agree on it."
    text = f"{first} {second}"
    start2 = len(first.encode()) + 1
    meta = {
        "webSearchQueries": [prompt],
        "searchEntryPoint": {"renderedContent": "<div>mock search</div>"},
        "groundingChunks": [
            {"web": {"uri": "https://example.com/news/1", "title": "example.com"}},
            {"web": {"uri": "https://example.org/report", "title": "example.org"}}],
        "groundingSupports": [
            {"segment": {"startIndex": 0, "endIndex": len(first.encode()), "text": first},
             "groundingChunkIndices": [0]},
            {"segment": {"startIndex": start2, "endIndex": len(text.encode()), "text": second},
             "groundingChunkIndices": [0, 1]}],
    }
    return text, meta


def _reply_parts(body: JSON, rid: str) -> tuple[list[JSON], JSON | None]:
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    responses = [p["functionResponse"] for p in parts_of(last) if "functionResponse" in p]
    if responses:
        outputs = [r.get("response") for r in responses]
        return [{"text": "Tool results: " + dumps(outputs).decode()}], None
    prompt = last_user_text(body)
    decl = pick_function(body, prompt)
    if decl is not None:
        schema = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
        call = {"name": decl["name"], "args": sample(schema, prompt)}
        return [{"functionCall": call, "thoughtSignature": _signature(rid)}], None
    if any("googleSearch" in t for t in body.get("tools") or []):
        text, meta = _grounded(prompt)
        return [{"text": text}], meta
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        value = sample(schema, prompt) if schema else {"echo": prompt}
        return [{"text": dumps(value).decode()}], None
    media = sum(1 for c in contents for p in parts_of(c) if "inlineData" in p or "fileData" in p)
    suffix = f" [{media} media parts]" if media else ""
    return [{"text": f"Echo: {prompt}{suffix}"}], None


def _limit(parts: list[JSON], config: JSON) -> tuple[list[JSON], str]:
    if len(parts) != 1 or "text" not in parts[0]:
        return parts, "STOP"
    text = parts[0]["text"]
    for stop in config.get("stopSequences") or []:
        if stop and stop in text:
            text = text[:text.index(stop)]
    reason = "STOP"
    limit = config.get("maxOutputTokens")
    words = text.split(" ")
    if isinstance(limit, int) and len(words) > limit:
        text, reason = " ".join(words[:limit]), "MAX_TOKENS"
    return [{"text": text}], reason


def usage_for(body: JSON, parts: list[JSON]) -> JSON:
    chars = sum(len(dumps(p)) for c in body.get("contents") or [] for p in parts_of(c))
    chars += sum(len(dumps(p)) for p in parts_of(body.get("systemInstruction") or {}))
    prompt = max(1, chars // 4) + 3 * len(body.get("contents") or [])
    out_tokens = sum(len(p["text"].split()) if "text" in p else len(dumps(p)) // 4
                     for p in parts)
    usage: JSON = {"promptTokenCount": prompt, "candidatesTokenCount": out_tokens}
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    thoughts = 0
    if thinking.get("thinkingLevel") or thinking.get("thinkingBudget"):
        thoughts = 16
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + out_tokens + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def build_response(body: JSON, model: str, rid: str) -> JSON:
    config = body.get("generationConfig") or {}
    parts, grounding = _reply_parts(body, rid)
    parts, reason = _limit(parts, config)
    candidates: list[JSON] = []
    for index in range(int(config.get("candidateCount") or 1)):
        cand: JSON = {"content": {"parts": parts, "role": "model"}, "finishReason": reason,
                      "index": index}
        if any("functionCall" in p for p in parts):
            cand["finishMessage"] = "Model generated function call(s)."
        if grounding:
            cand["groundingMetadata"] = grounding
        candidates.append(cand)
    usage = usage_for(body, parts)
    usage["candidatesTokenCount"] *= len(candidates)
    usage["totalTokenCount"] = (usage["promptTokenCount"] + usage["candidatesTokenCount"]
                                + usage.get("thoughtsTokenCount", 0))
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model,
            "responseId": rid}


def stream_chunks(reply: JSON, body: JSON, chunk_words: int) -> Iterator[JSON]:
    """Split each candidate's text into events of `chunk_words` words; calls arrive whole."""
    cands = reply["candidates"]
    parts = cands[0]["content"]["parts"]
    pieces: list[list[JSON]] = []
    for part in parts:
        if "text" in part:
            words = part["text"].split(" ")
            for i in range(0, len(words), chunk_words):
                tail = " " if i + chunk_words < len(words) else ""
                pieces.append([{"text": " ".join(words[i:i + chunk_words]) + tail}])
        else:
            pieces.append([part])
    pieces = pieces or [[{"text": ""}]]
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        event_cands = []
        for cand in cands:
            out: JSON = {"content": {"parts": piece, "role": "model"}, "index": cand["index"]}
            if last:
                out.update({k: v for k, v in cand.items() if k not in ("content", "index")})
            event_cands.append(out)
        usage = dict(reply["usageMetadata"])
        if not last:
            usage = usage_for(body, [p for pc in pieces[:n + 1] for p in pc])
        yield {"candidates": event_cands, "usageMetadata": usage,
               "modelVersion": reply["modelVersion"], "responseId": reply["responseId"]}
