"""A scriptable fake OpenAI-compatible upstream for tests (real wire format: PROVIDERS.md §1, §7.1).

    async with FakeOpenAI() as fake:                  # an aiohttp app on 127.0.0.1, port 0
        fake.push(Reply(200, completion("Hi!")))      # answers are consumed in order...
        fake.push(Stream(text_stream(["Hel", "lo"]), split=range(1, 8)))
        fake.push(Reply(429, error_body("slow down", "requests", "rate_limit_exceeded"),
                        headers={"Retry-After": "2"}))
        # ...point a provider's `base_url` at `fake.base_url` ("http://127.0.0.1:PORT/v1")...
        assert fake.requests[0].json["model"] == "gpt-4o"
        assert fake.requests[0].headers["authorization"] == "Bearer sk-upstream"

When the queue is empty the fake answers like OpenAI would, from the request: a completion whose
text is `echo: <last user text>` (an SSE stream when the body says `"stream": true`, with the usage
chunk when `stream_options.include_usage` is set), an embeddings list, or the models list.
`fake.default` may be set to a `Reply`, a `Stream` or a function of the `Recorded` request.

Scripting, per answer:
- `Reply(status, body, headers=..., delay_s=..., gate=..., hang=..., drop=...)`: one JSON (or raw
  bytes) answer; `delay_s` / `gate` (an `asyncio.Event`) delay the headers; `hang` never answers;
  `drop` closes the connection without any answer.
- `Stream(events, done=True, split=..., chunk_delay_s=..., pause={i: event}, drop_after=n,
  hang_after=n, ...)`: an SSE answer. `events` are dicts (sent as `data: <json>`), strings (sent as
  `data: <str>`) or raw bytes; `data: [DONE]` is appended unless `done=False` (a stream that ends
  without it). `split=range(1, 8)` re-cuts the byte stream into writes of 1, 2, ... 7, 1, 2 ...
  bytes (sizes cycle through the sequence; a single int: fixed size), each on its own.
  `pause={1: ev}` waits for `ev` before writing event 1 (so a test can
  hold the rest of the stream until it has read the first event). `drop_after=n` cuts the TCP
  connection after n events (mid-stream drop); `hang_after=n` stops sending after n events and
  never ends the stream.

Every request is recorded (`fake.requests`, a list of `Recorded`): method, path, query, headers
(lower-case names), raw body and decoded JSON, and how the exchange ended (`outcome`: "answered",
"client_gone" when the caller closed the connection first, "dropped", "hung"; the flag
`client_gone` is also set when the caller abandoned a hung answer). `rec.finished` is an
`asyncio.Event` set when the fake's handler is done; `fake.wait_requests(n)` waits for n requests.
Hung and paused handlers are cut (connection aborted) when the fake closes, so shutdown is prompt.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import orjson
from aiohttp import web

DONE = b"data: [DONE]\n\n"
DEFAULT_MODEL = "gpt-4o-2024-08-06"
FINGERPRINT = "fp_5050236cbd"


# ----------------------------------------------------------------------------- wire payloads


def usage_body(prompt: int = 19, completion: int = 10, *, cached: int = 0,
               reasoning: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def completion(content: str | None = "Hello! How can I assist you today?", *,
               model: str = DEFAULT_MODEL, tool_calls: list[dict[str, Any]] | None = None,
               usage: tuple[int, int] | None = (19, 10), finish_reason: str | None = None,
               id: str = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
               created: int = 1741569952) -> dict[str, Any]:
    """A `chat.completion` body as OpenAI sends it (§1.4)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None,
                               "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop")}],
        "service_tier": "default", "system_fingerprint": FINGERPRINT}
    if usage is not None:
        body["usage"] = usage_body(*usage)
    return body


def tool_call(name: str, arguments: str, id: str = "call_abc123") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chunk(delta: Mapping[str, Any] | None, *, finish_reason: str | None = None,
          model: str = DEFAULT_MODEL, id: str = "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF",
          created: int = 1727346169, usage: tuple[int, int] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` gives the usage-only chunk (`choices: []`)."""
    out: dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": created,
                           "model": model, "system_fingerprint": FINGERPRINT}
    if delta is None:
        out["choices"] = []
        out["usage"] = usage_body(*(usage or (19, 2)))
        return out
    out["choices"] = [{"index": 0, "delta": dict(delta), "logprobs": None,
                       "finish_reason": finish_reason}]
    return out


def text_stream(pieces: Sequence[str], *, model: str = DEFAULT_MODEL,
                usage: tuple[int, int] | None = (19, 2), finish_reason: str = "stop",
                id: str = "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF") -> list[dict[str, Any]]:
    """The chunks of a streamed text answer (§7.1): role, content pieces, finish, usage if given."""
    kw = {"model": model, "id": id}
    out = [chunk({"role": "assistant", "content": "", "refusal": None}, **kw)]
    out += [chunk({"content": p}, **kw) for p in pieces]
    out.append(chunk({}, finish_reason=finish_reason, **kw))
    if usage is not None:
        out.append(chunk(None, usage=usage, **kw))
    return out


def tool_call_stream(name: str, fragments: Sequence[str], *, call_id: str = "call_c91SqDXlYFuETYv8mUHzz6pp",
                     model: str = DEFAULT_MODEL, usage: tuple[int, int] | None = (76, 24),
                     id: str = "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr") -> list[dict[str, Any]]:
    """The chunks of a streamed tool call (§1.5): name first, then argument fragments."""
    kw = {"model": model, "id": id}
    first = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"index": 0, "id": call_id, "type": "function",
         "function": {"name": name, "arguments": ""}}]}
    out = [chunk(first, **kw)]
    out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}, **kw)
            for f in fragments]
    out.append(chunk({}, finish_reason="tool_calls", **kw))
    if usage is not None:
        out.append(chunk(None, usage=usage, **kw))
    return out


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def embeddings_body(inputs: Sequence[Any], *, model: str = "text-embedding-3-small",
                    dims: int = 4) -> dict[str, Any]:
    data = []
    for i, item in enumerate(inputs):
        digest = hashlib.sha256(repr(item).encode()).digest()
        data.append({"object": "embedding", "index": i,
                     "embedding": [round((digest[j] - 128) / 128, 6) for j in range(dims)]})
    tokens = sum(max(1, len(str(x)) // 4) for x in inputs)
    return {"object": "list", "model": model, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def models_body(ids: Iterable[str] = ("gpt-4o", "gpt-4o-mini")) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 1686935002,
                                        "owned_by": "openai"} for m in ids]}


def sse_event(event: bytes | str | Mapping[str, Any]) -> bytes:
    """One SSE event: a dict as `data: <json>`, a str as `data: <str>`, bytes unchanged."""
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return b"data: " + event.encode() + b"\n\n"
    return b"data: " + orjson.dumps(event) + b"\n\n"


def sse(events: Iterable[bytes | str | Mapping[str, Any]], done: bool = True) -> bytes:
    return b"".join(sse_event(e) for e in events) + (DONE if done else b"")


def split_bytes(data: bytes, sizes: int | Sequence[int]) -> list[bytes]:
    """Cut `data` into pieces whose sizes cycle through `sizes`."""
    cycle: Iterator[int] = itertools.cycle([sizes] if isinstance(sizes, int) else list(sizes))
    out, i = [], 0
    while i < len(data):
        n = max(1, next(cycle))
        out.append(data[i:i + n])
        i += n
    return out


# ----------------------------------------------------------------------------- scripted answers


@dataclass
class Reply:
    """A plain answer. `body`: JSON-able (sent as JSON), bytes (sent as is) or None (empty)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the status line and headers
    gate: asyncio.Event | None = None  # wait for this before the headers
    hang: bool = False  # never answer (until the client leaves or the fake closes)
    drop: bool = False  # close the connection without answering
    content_type: str = "application/json"


@dataclass
class Stream:
    """An SSE answer (`text/event-stream`, chunked) made of `events`, `[DONE]` appended if `done`."""

    events: Sequence[bytes | str | Mapping[str, Any]]
    done: bool = True
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the headers
    gate: asyncio.Event | None = None  # wait for this before the headers
    split: int | Sequence[int] | None = None  # re-cut the bytes into writes of these sizes (cycled)
    chunk_delay_s: float = 0.0  # between writes
    pause: Mapping[int, asyncio.Event] = field(default_factory=dict)  # before event i, wait
    drop_after: int | None = None  # cut the TCP connection after this many events
    hang_after: int | None = None  # stop after this many events and never end the stream

    def segments(self) -> list[tuple[int, bytes]]:
        """(index of the first event, bytes) runs, cut where something happens between events."""
        frames = [sse_event(e) for e in self.events]
        if self.done:
            frames.append(DONE)
        cuts = set(self.pause) | {n for n in (self.drop_after, self.hang_after) if n is not None}
        out: list[tuple[int, bytes]] = []
        start = 0
        for i in sorted(c for c in cuts if 0 < c < len(frames)) + [len(frames)]:
            out.append((start, b"".join(frames[start:i])))
            start = i
        return out


Answer = Union[Reply, Stream]
Script = Union[Reply, Stream, Callable[["Recorded"], Union[Reply, Stream]]]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # the decoded body, or None when it is not JSON
    outcome: str = "pending"  # answered | client_gone | dropped | hung
    client_gone: bool = False  # the caller closed the connection before the fake was done
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


# ----------------------------------------------------------------------------- the server


class FakeOpenAI:
    """See the module docstring. Start with `async with FakeOpenAI() as fake` or `await start()`."""

    def __init__(self, *, default: Script | None = None, host: str = "127.0.0.1") -> None:
        self.default = default
        self.host = host
        self.requests: list[Recorded] = []
        self.queue: list[Script] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # -------------------------------------------------------------- life cycle
    async def start(self) -> "FakeOpenAI":
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeOpenAI":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a provider's `base_url` should be (OpenAI convention: ends in /v1)."""
        return f"{self.url}/v1"

    # -------------------------------------------------------------- scripting and inspection
    def push(self, *answers: Script) -> "FakeOpenAI":
        """Queue answers; each request takes the next one (then `default`, then auto-replies)."""
        self.queue.extend(answers)
        return self

    def reset(self) -> None:
        self.queue.clear()
        self.requests.clear()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least `n` requests arrived (raises TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= n)
        return self.requests

    # -------------------------------------------------------------- handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        rec = Recorded(request.method, request.path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, raw, parsed)
        async with self._arrived:
            self.requests.append(rec)
            self._arrived.notify_all()
        script = self.queue.pop(0) if self.queue else self.default
        answer = script(rec) if callable(script) else script
        if answer is None:
            answer = auto_answer(rec)
        try:
            if isinstance(answer, Stream):
                return await self._stream(request, rec, answer)
            return await self._reply(request, rec, answer)
        except (asyncio.CancelledError, ConnectionResetError):
            if rec.outcome != "dropped" and not self._closing.is_set():
                rec.client_gone = True
            if rec.outcome == "pending":
                rec.outcome = "client_gone"
            raise
        finally:
            rec.finished.set()

    async def _before_headers(self, request: web.Request, answer: Reply | Stream) -> None:
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.gate is not None:
            await self._wait(request, answer.gate)

    async def _wait(self, request: web.Request, event: asyncio.Event) -> None:
        """Wait for `event`; if the fake closes first, cut the connection (shutdown never waits)."""
        closing = asyncio.ensure_future(self._closing.wait())
        waiting = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({closing, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            waiting.cancel()
        if not event.is_set():
            await self._hang(request)

    async def _hang(self, request: web.Request) -> None:
        """Until the caller leaves (the handler is cancelled) or the fake closes (abort)."""
        await self._closing.wait()
        _abort(request)
        raise asyncio.CancelledError

    async def _reply(self, request: web.Request, rec: Recorded, answer: Reply) -> web.StreamResponse:
        if answer.drop:
            rec.outcome = "dropped"
            _abort(request)
            raise asyncio.CancelledError  # nothing more to send on a closed connection
        if answer.hang:
            rec.outcome = "hung"
            await self._hang(request)
        await self._before_headers(request, answer)
        body = answer.body
        data = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
        resp = web.Response(status=answer.status, body=data, headers=dict(answer.headers))
        resp.content_type = answer.content_type
        rec.outcome = "answered"
        return resp

    async def _stream(self, request: web.Request, rec: Recorded, answer: Stream) -> web.StreamResponse:
        await self._before_headers(request, answer)
        resp = web.StreamResponse(status=answer.status, headers={
            "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            **dict(answer.headers)})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for first, data in answer.segments():
            if first == answer.drop_after:
                rec.outcome = "dropped"
                _abort(request)
                raise asyncio.CancelledError
            if first == answer.hang_after:
                rec.outcome = "hung"
                await self._hang(request)
            if first in answer.pause:
                await self._wait(request, answer.pause[first])
            for piece in split_bytes(data, answer.split) if answer.split else [data]:
                if answer.chunk_delay_s:
                    await asyncio.sleep(answer.chunk_delay_s)
                elif answer.split:
                    for _ in range(2):  # yield, so that the reader sees each piece on its own
                        await asyncio.sleep(0)
                await resp.write(piece)
        rec.outcome = "answered"
        await resp.write_eof()
        return resp


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


# ----------------------------------------------------------------------------- auto replies


def _last_user_text(body: Any) -> str:
    for m in reversed((body or {}).get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""


def auto_answer(rec: Recorded) -> Answer:
    """What the fake answers when nothing is scripted: OpenAI's shape, derived from the request."""
    body = rec.json if isinstance(rec.json, dict) else {}
    model = body.get("model") or DEFAULT_MODEL
    if rec.path.endswith("/chat/completions") and rec.method == "POST":
        text = f"echo: {_last_user_text(body)}"
        if body.get("stream"):
            usage = (19, 2) if (body.get("stream_options") or {}).get("include_usage") else None
            words = text.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            return Stream(text_stream(pieces, model=model, usage=usage))
        return Reply(200, completion(text, model=model, created=int(time.time())))
    if rec.path.endswith("/embeddings") and rec.method == "POST":
        inp = body.get("input")
        return Reply(200, embeddings_body([inp] if isinstance(inp, str) else list(inp or []),
                                          model=model))
    if rec.path.endswith("/models"):
        return Reply(200, models_body())
    return Reply(404, error_body(f"Invalid URL ({rec.method} {rec.path})", code="unknown_url"))
