"""A fake Gemini API (generativelanguage v1beta) upstream, faithful enough for `google-genai`.

`create_app()` serves (under /v1beta and /v1) `POST /v1beta/models/{model}:generateContent`,
`:streamGenerateContent?alt=sse`, `:embedContent`, `:batchEmbedContents`, `GET /v1beta/models`
and Google-shaped errors (`{"error": {"code", "message", "status", "details"}}`). Replies are
derived from the request only, so tests can predict them:

* a last user turn holding functionResponse parts -> text "Tool results: <outputs as JSON>";
* function declarations and a prompt that asks (names the function or a word of its name), or
  mode ANY -> a functionCall part (args fill the schema; strings get the prompt's last word)
  with a deterministic `thoughtSignature`; finishReason STOP as the real API does;
* a googleSearch tool -> cited text with groundingMetadata (chunks and supports);
* responseMimeType application/json -> a JSON object built from responseJsonSchema/responseSchema;
* otherwise "Echo: <last user text>" (plus "[N media parts]" when images/files were sent).
`stopSequences` cut the text; more words than `maxOutputTokens` are cut (MAX_TOKENS).
Usage: prompt ~ characters/4 + 3 per turn, candidates = words, thoughts when thinkingConfig asks.

Fault drills: `fail_rate` answers that share of requests 503 UNAVAILABLE; a request header
`x-mock-error: <google status>` answers that error (RESOURCE_EXHAUSTED carries a RetryInfo of
1s); `x-mock-stream-error: <status>` sends an `{"error": ...}` event after the first chunk. An
API key "invalid" gets 400 API_KEY_INVALID; no key gets 403 PERMISSION_DENIED. Unknown request
fields are rejected with 400 INVALID_ARGUMENT like the real API.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from aiohttp import web

from gateway.types import JSON, dumps, loads
from gateway.mockserver.replies import sample
from gateway.mockserver.settings import MockSettings

_STATUS_HTTP = MappingProxyType({
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
})
_MODELS = (("gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536),
           ("gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536),
           ("gemini-3-pro-preview", "Gemini 3 Pro Preview", 1048576, 65536),
           ("gemini-embedding-001", "Gemini Embedding 001", 2048, 1))
_TOP_FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig",
                         "generationConfig", "safetySettings", "cachedContent", "labels", "model"})
_GEN_FIELDS = frozenset({
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
    "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "responseLogprobs", "logprobs", "responseModalities", "thinkingConfig",
    "mediaResolution", "speechConfig", "enableEnhancedCivicAnswers", "imageConfig"})
EMBED_DIMENSIONS = 768


SETTINGS = web.AppKey("gemini_mock_settings", MockSettings)


def create_app(*, latency_ms: float = 0, fail_rate: float = 0.0,
               chunk_words: int = 1) -> web.Application:
    app = web.Application()
    app[SETTINGS] = MockSettings(latency_ms, fail_rate, max(1, chunk_words))
    for version in ("v1beta", "v1"):  # google-genai 3.x defaults to v1; the gateway uses v1beta
        app.router.add_post(f"/{version}/models/{{spec}}", _dispatch)
        app.router.add_get(f"/{version}/models", _list_models)
        app.router.add_get(f"/{version}/models/{{model}}", _get_model)
    return app


def error_body(status: str, message: str, details: list[JSON] | None = None) -> JSON:
    err: JSON = {"code": _STATUS_HTTP.get(status, 500), "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def _error(status: str, message: str, details: list[JSON] | None = None) -> web.Response:
    return web.Response(body=dumps(error_body(status, message, details)),
                        status=_STATUS_HTTP.get(status, 500), content_type="application/json")


def _forced(status: str) -> web.Response:
    details = None
    if status == "RESOURCE_EXHAUSTED":
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    return _error(status, f"mock {status}", details)


def _auth_problem(request: web.Request) -> web.Response | None:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        return _error("PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers "
                      "without established identity). Please use API Key or other form of API "
                      "consumer identity to call this API.")
    if key == "invalid":
        return _error("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}}])
    return None


# ---------------------------------------------------------------- handlers


async def _dispatch(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    model, _, method = request.match_info["spec"].rpartition(":")
    if settings.latency_ms:
        await asyncio.sleep(settings.latency_ms / 1000)
    problem = _auth_problem(request)
    if problem is not None:
        return problem
    if request.headers.get("x-mock-error"):
        return _forced(request.headers["x-mock-error"])
    if settings.fail_rate and settings.rng.random() < settings.fail_rate:
        return _error("UNAVAILABLE", "The model is overloaded. Please try again later.")
    if model not in {m[0] for m in _MODELS}:
        return _error("NOT_FOUND", f"models/{model} is not found for API version v1beta, or is "
                      "not supported for generateContent.")
    raw = await request.read()
    try:
        body = loads(raw)
    except ValueError:
        return _error("INVALID_ARGUMENT", "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return _error("INVALID_ARGUMENT", "Invalid JSON payload received.")
    body = camel_keys(body)
    if method in ("embedContent", "batchEmbedContents"):
        return _embed(model, method, body)
    if method not in ("generateContent", "streamGenerateContent"):
        return _error("NOT_FOUND", f"method {method} not found")
    problem_text = validate(body)
    if problem_text:
        return _error("INVALID_ARGUMENT", problem_text)
    reply = build_response(body, model, "r" + hashlib.sha256(raw).hexdigest()[:22])
    if method == "generateContent":
        return web.Response(body=dumps(reply), content_type="application/json")
    return await _stream(request, reply, body, settings.chunk_words)


async def _stream(request: web.Request, reply: JSON, body: JSON,
                  chunk_words: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream",
                                       "cache-control": "no-cache"})
    await resp.prepare(request)
    fail = request.headers.get("x-mock-stream-error")
    for n, event in enumerate(stream_chunks(reply, body, chunk_words)):
        if fail and n == 1:
            await resp.write(b"data: " + dumps(error_body(fail, f"mock {fail}")) + b"\r\n\r\n")
            break
        await resp.write(b"data: " + dumps(event) + b"\r\n\r\n")
    await resp.write_eof()
    return resp


def _model_info(mid: str, name: str, inp: int, out: int) -> JSON:
    embed = "embedding" in mid
    methods = ["embedContent", "batchEmbedContents"] if embed else [
        "generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
    info: JSON = {"name": f"models/{mid}", "version": "001", "displayName": name,
                  "description": f"{name} (mock)", "inputTokenLimit": inp,
                  "outputTokenLimit": out, "supportedGenerationMethods": methods}
    if not embed:
        info.update({"temperature": 1, "maxTemperature": 2, "topP": 0.95, "topK": 64,
                     "thinking": True})
    return info


async def _list_models(request: web.Request) -> web.Response:
    problem = _auth_problem(request)
    if problem is not None:
        return problem
    return web.Response(body=dumps({"models": [_model_info(*m) for m in _MODELS]}),
                        content_type="application/json")


async def _get_model(request: web.Request) -> web.Response:
    problem = _auth_problem(request)
    if problem is not None:
        return problem
    for m in _MODELS:
        if m[0] == request.match_info["model"]:
            return web.Response(body=dumps(_model_info(*m)), content_type="application/json")
    return _error("NOT_FOUND", f"models/{request.match_info['model']} is not found")


# Values kept verbatim by camel_keys: schemas, call arguments and function results are user data.
_OPAQUE = frozenset({"parameters", "parametersJsonSchema", "responseSchema", "responseJsonSchema",
                     "args", "response", "labels", "metadata"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def camel_keys(value: Any) -> Any:
    """proto3 JSON parsers accept snake_case and lowerCamelCase names (google-genai sends some
    snake_case keys, e.g. `parameters_json_schema`); normalise to camelCase like the server."""
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: JSON = {}
    for key, item in value.items():
        name = _camel(key) if isinstance(key, str) and "_" in key else key
        out[name] = item if name in _OPAQUE else camel_keys(item)
    return out


def validate(body: JSON) -> str | None:
    for key in body:
        if key not in _TOP_FIELDS:
            return f"Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
    for key in body.get("generationConfig") or {}:
        if key not in _GEN_FIELDS:
            return (f"Invalid JSON payload received. Unknown name \"{key}\" at "
                    "'generation_config': Cannot find field.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in (None, "user", "model", "function"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        if not content.get("parts"):
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
    return None


# ---------------------------------------------------------------- the reply


def _parts_of(content: JSON) -> list[JSON]:
    return [p for p in content.get("parts") or [] if isinstance(p, dict)]


def last_user_text(body: JSON) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in _parts_of(content) if isinstance(p.get("text"), str)]
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
    responses = [p["functionResponse"] for p in _parts_of(last) if "functionResponse" in p]
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
    media = sum(1 for c in contents for p in _parts_of(c) if "inlineData" in p or "fileData" in p)
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
    chars = sum(len(dumps(p)) for c in body.get("contents") or [] for p in _parts_of(c))
    chars += sum(len(dumps(p)) for p in _parts_of(body.get("systemInstruction") or {}))
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


# ---------------------------------------------------------------- embeddings


def embed_values(text: str, dims: int) -> list[float]:
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}|{text}".encode()).digest()
        out += [round((b - 127.5) / 127.5, 6) for b in digest]
        counter += 1
    return out[:dims]


def _embed_one(req: JSON) -> JSON:
    text = " ".join(p.get("text", "") for p in _parts_of(req.get("content") or {}))
    dims = int(req.get("outputDimensionality") or EMBED_DIMENSIONS)
    return {"values": embed_values(text, dims)}


def _embed(model: str, method: str, body: JSON) -> web.Response:
    if method == "embedContent":
        if not isinstance(body.get("content"), dict):
            return _error("INVALID_ARGUMENT", "* EmbedContentRequest.content: content is required")
        return web.Response(body=dumps({"embedding": _embed_one(body)}),
                            content_type="application/json")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return _error("INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: is required")
    for i, req in enumerate(requests):
        if req.get("model") != f"models/{model}":
            return _error("INVALID_ARGUMENT", f"requests[{i}].model must be models/{model}")
    return web.Response(body=dumps({"embeddings": [_embed_one(r) for r in requests]}),
                        content_type="application/json")
