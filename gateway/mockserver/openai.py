"""A fake OpenAI upstream (`modelyard mock-provider --flavor openai`): the real wire format.

Serves POST /v1/chat/completions (JSON and SSE), POST /v1/embeddings and GET /v1/models with the
deterministic replies of `replies.py`; `fail_rate` answers that share of requests with a 503.
"""
from __future__ import annotations

import asyncio
import random

from aiohttp import web

from gateway.mockserver import replies
from gateway.types import dumps


def _error(status: int, message: str, etype: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.Response(status=status, body=dumps(body), content_type="application/json")


def create_app(*, latency_ms: float = 0, fail_rate: float = 0.0, chunk_words: int = 1,
               chunk_delay_ms: float = 0) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if fail_rate and random.random() < fail_rate:
            return _error(503, "The server is overloaded, please try again.", "server_error")
        try:
            body = await request.json(loads=lambda s: __import__("orjson").loads(s))
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.",
                          "invalid_request_error")
        if not body.get("stream"):
            return web.Response(body=dumps(replies.completion(body)),
                                content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i, frame in enumerate(replies.stream_chunks(body, chunk_words)):
            if chunk_delay_ms and i:
                await asyncio.sleep(chunk_delay_ms / 1000)
            await resp.write(frame)
        await resp.write_eof()
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        return web.Response(body=dumps(replies.embeddings(body)), content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 1686935002, "owned_by": "mock"}
                for m in ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")]
        return web.Response(body=dumps({"object": "list", "data": data}),
                            content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app
