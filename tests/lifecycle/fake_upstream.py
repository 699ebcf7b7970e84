"""A tiny OpenAI-style upstream on 127.0.0.1 whose answers name the account that served them.

`POST /<name>/v1/chat/completions`: streamed, `chunks` content frames `"<name>-<i> "` paced by
`delay_s`; otherwise one JSON completion whose content is `<name>`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.types import dumps


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + dumps(body) + b"\n\n"


def create_app(chunks: int = 10, delay_s: float = 0.2) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.json()
        model = body.get("model", "fake")
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": name}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
        for i in range(chunks):
            await asyncio.sleep(delay_s)
            await resp.write(_chunk(model, {"content": f"{name}-{i} "}))
        await resp.write(_chunk(model, {}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/{name}/v1/chat/completions", chat)
    return app
