"""A fault-injecting fake OpenAI upstream: one aiohttp app on 127.0.0.1, many provider accounts.

Each provider name gets its own path prefix (`/<name>/v1/chat/completions`) and its own script:
a queue of `Action`s consumed one per call (then `default`, normally a plain answer), or a
callable that picks an action per call (the stress test). Every call is counted; hangs and
streams set `cancelled[name]` when the gateway closes the connection.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from gateway.types import dumps, loads


@dataclass(frozen=True)
class Action:
    kind: str = "ok"  # ok (streamed when asked) | status | reset
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON body for `status`
    delay_s: float = 0.0  # before the status line (time to first byte)
    chunks: int = 3  # stream: content chunks before the end
    end: str = "done"  # stream end: done | truncate (no [DONE]) | drop (reset) | stall | error
    chunk_delay_s: float = 0.0
    text: str = "hi"


OK = Action()


def status(code: int, message: str = "", headers: dict[str, str] | None = None,
           code_field: str | None = None, delay_s: float = 0.0) -> Action:
    err = {"error": {"message": message or f"fake error {code}", "type": "server_error",
                     "param": None, "code": code_field}}
    return Action("status", code, headers or {}, err, delay_s)


def reset() -> Action:
    return Action("reset")


def hang(seconds: float = 30.0) -> Action:
    """Silence for `seconds`, then a normal answer (the gateway usually gives up first)."""
    return Action("ok", delay_s=seconds)


def stream(chunks: int = 3, end: str = "done", chunk_delay_s: float = 0.0,
           delay_s: float = 0.0) -> Action:
    return Action("ok", chunks=chunks, end=end, chunk_delay_s=chunk_delay_s, delay_s=delay_s)


class FakeUpstream:
    def __init__(self) -> None:
        self.scripts: dict[str, deque[Action]] = defaultdict(deque)
        self.pickers: dict[str, Callable[[], Action]] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.models: dict[str, list[str]] = defaultdict(list)
        self.cancelled: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.open = 0  # handlers running right now
        self.peers: set[Any] = set()  # client (host, port) pairs: one per upstream connection
        self.base = ""  # http://127.0.0.1:PORT, set by the fixture once the server listens
        self.record_models = True  # off in stress runs, so the fake's memory stays flat
        self.app = web.Application()
        self.app.router.add_post("/{provider}/v1/chat/completions", self._chat)
        self.app.router.add_post("/{provider}/v1/embeddings", self._embeddings)

    def script(self, provider: str, *actions: Action) -> None:
        self.scripts[provider].extend(actions)

    def _next(self, provider: str) -> Action:
        picker = self.pickers.get(provider)
        if picker is not None:
            return picker()
        queue = self.scripts[provider]
        return queue.popleft() if queue else OK

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        provider = request.match_info["provider"]
        self.calls[provider] += 1
        body = loads(await request.read())
        if self.record_models:
            self.peers.add(request.transport.get_extra_info("peername") if request.transport
                           else None)
            self.models[provider].append(body.get("model", ""))
        action = self._next(provider)
        self.open += 1
        try:
            return await self._act(request, provider, action, body)
        except asyncio.CancelledError:
            self.cancelled[provider].set()
            raise
        finally:
            self.open -= 1

    async def _act(self, request: web.Request, provider: str, action: Action,
                   body: dict[str, Any]) -> web.StreamResponse:
        if action.delay_s:
            await asyncio.sleep(action.delay_s)
        if action.kind == "reset":
            _abort(request)
            return web.Response()
        if action.kind == "status":
            return web.Response(status=action.status, body=dumps(action.body),
                                content_type="application/json", headers=action.headers)
        if body.get("stream"):
            try:
                return await self._stream(request, body, action)
            except ConnectionResetError:  # the gateway hung up first (a timeout): fine
                return web.Response()
        return web.json_response(completion(body.get("model", ""), action.text),
                                 dumps=lambda o: dumps(o).decode())

    async def _stream(self, request: web.Request, body: dict[str, Any],
                      action: Action) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        model = body.get("model", "")
        for i in range(action.chunks):
            if i and action.chunk_delay_s:
                await asyncio.sleep(action.chunk_delay_s)
            await resp.write(sse(chunk(model, {"content": f"{action.text}{i} "})))
        if action.chunk_delay_s:
            await asyncio.sleep(action.chunk_delay_s)
        if action.end == "drop":
            _abort(request)
            return resp
        if action.end == "stall":
            await asyncio.sleep(3600)
        if action.end == "error":
            await resp.write(sse({"error": {"message": "overloaded mid-stream",
                                            "type": "server_error", "code": None}}))
            await resp.write_eof()
            return resp
        if action.end != "truncate":
            await resp.write(sse(chunk(model, {}, finish="stop")))
            await resp.write(sse({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                                  "model": model, "choices": [], "usage": USAGE}))
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        self.calls[provider] += 1
        body = loads(await request.read())
        action = self._next(provider)
        if action.kind == "status":
            return web.Response(status=action.status, body=dumps(action.body),
                                content_type="application/json", headers=action.headers)
        data = {"object": "list", "model": body.get("model", ""),
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}}
        return web.Response(body=dumps(data), content_type="application/json")


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}], "usage": USAGE}


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def random_faults(rng: random.Random, rate: float, hang_s: float) -> Callable[[], Action]:
    """A picker failing `rate` of calls with a 500, a reset or a short hang, in equal parts."""
    def pick() -> Action:
        if rng.random() >= rate:
            return OK
        kind = rng.randrange(3)
        if kind == 0:
            return status(500)
        if kind == 1:
            return reset()
        return hang(hang_s)
    return pick
