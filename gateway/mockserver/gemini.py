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
import hashlib
from types import MappingProxyType
from typing import Any

from aiohttp import web

from gateway.types import JSON, dumps, loads
from gateway.mockserver.gemini_replies import build_response, parts_of, stream_chunks
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
    text = " ".join(p.get("text", "") for p in parts_of(req.get("content") or {}))
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
