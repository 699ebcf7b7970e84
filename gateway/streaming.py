"""The stream relay: upstream bytes → SSE reader → adapter decoder → usage tap → OpenAI chunks.

The first byte sent to the client is the commit point (see dispatch.py); after it, an upstream
failure, a stream cut short or a stall longer than `timeouts.idle_s` ends the client stream with
one `data: {"error": …}` event and no `[DONE]`. Usage is always captured (the gateway asked
upstream for it) and the usage chunk is stripped when the client did not ask for it.

A request whose task the graceful shutdown cancels (`cut_at_shutdown`, when
`server.shutdown_grace_s` ran out) is recorded as `cut="shutdown"`, never as a client that left:
`cut_by_shutdown()` tells the two cancellations apart.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, AsyncGenerator

from gateway.accounting.record import UsageRecord
from gateway.dispatch import StreamStart
from gateway.errors import GatewayError, ServiceUnavailable, UpstreamProtocolError, UpstreamTimeout
from gateway.sse import DONE
from gateway.types import StreamEvent, Usage, dumps

log = logging.getLogger(__name__)

# ------------------------------------------------------------ requests cut by the shutdown
SHUTDOWN_CUT = "shutdown"  # UsageRecord.cut of a request the graceful shutdown cut short
SHUTDOWN_ERROR = "gateway_shutdown"  # its error_type, and the error code its client is sent
SHUTDOWN_MESSAGE = "modelyard: the shutdown grace period is over"  # the cancel message
_cut_at_shutdown: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def cut_at_shutdown(task: asyncio.Task[Any]) -> None:
    """Cancel an in-flight request's task because the shutdown grace period ran out. The request
    then ends as cut by the shutdown: a 503 `gateway_shutdown` when no answer had started, one
    final error event when its stream had, `cut="shutdown"` in its usage record either way."""
    _cut_at_shutdown.add(task)
    task.cancel(SHUTDOWN_MESSAGE)


def cut_by_shutdown() -> bool:
    """Whether the running task was cancelled by `cut_at_shutdown` (else the client left)."""
    task = asyncio.current_task()
    return task is not None and task in _cut_at_shutdown


def shutdown_error() -> GatewayError:
    return ServiceUnavailable("the gateway is shutting down and the request did not finish "
                              "within its grace period (server.shutdown_grace_s); retry it",
                              code=SHUTDOWN_ERROR)


def absorb_shutdown_cut() -> None:
    """The shutdown's cancellation is answered (a 503, an error event) instead of propagated:
    the task ends normally, so its cancel request is withdrawn."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


class ChunkEncoder:
    """Stamps `id`, `object`, `created` and the client-facing `model` on canonical chunks."""

    __slots__ = ("model", "model_field", "id", "created", "include_usage", "usage", "chunks")

    def __init__(self, model: str, request_id: str, include_usage: bool) -> None:
        self.model = model
        self.model_field = '"model":' + dumps(model).decode()
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.chunks = 0  # chunks sent: the token estimate of a stream cut before its usage

    def encode(self, ev: StreamEvent) -> bytes | None:
        self.chunks += 1
        raw = ev.raw
        if raw is not None:  # passthrough: only the model field changes
            return b"data: " + raw.replace(ev.raw_model, self.model_field, 1).encode() + b"\n\n"
        chunk = ev.chunk
        if ev.usage is not None:
            self.usage = ev.usage  # the usage tap: kept for accounting whatever the client asked
            if not self.include_usage:
                if ev.usage_only:
                    return None
                chunk.pop("usage", None)
        if "id" not in chunk or not chunk["id"]:
            chunk["id"] = self.id
        chunk["object"] = "chat.completion.chunk"
        if not chunk.get("created"):
            chunk["created"] = self.created
        chunk["model"] = self.model
        return b"data: " + dumps(chunk) + b"\n\n"


def error_frame(exc: GatewayError) -> bytes:
    err = {"message": exc.message, "type": exc.type, "code": exc.code}
    return b"data: " + dumps({"error": err}) + b"\n\n"


async def relay(start: StreamStart, enc: ChunkEncoder, rec: UsageRecord, idle_s: float,
                on_first: Any = None) -> AsyncGenerator[bytes, None]:
    """Yield client frames. The caller closes this generator when the client goes away.

    Whatever goes wrong after the commit point ends the stream with one error event and no
    `[DONE]`: an upstream error or cut, a stream without its terminal event, a stall longer than
    `idle_s`, even a bug in a decoder (logged with its traceback).
    """
    reader, decoder, chunks = start.reader, start.decoder, start.chunks
    completed = False
    pending = b""
    try:
        for ev in start.first:
            frame = enc.encode(ev)
            if frame is not None:
                if on_first is not None:
                    on_first()
                    on_first = None
                yield frame
        start.response.idle(idle_s)  # the response raises UpstreamTimeout on a longer stall
        async for data in chunks:
            for sse in reader.feed(data):
                for ev in decoder.feed(sse):
                    frame = enc.encode(ev)
                    if frame is not None:
                        pending += frame
            if pending:  # the events of one upstream read leave in one write
                yield pending
                pending = b""
        tail = [e for sse in reader.close() for e in decoder.feed(sse)] + decoder.close()
        for ev in tail:
            frame = enc.encode(ev)
            if frame is not None:
                yield frame
        completed = True
        yield DONE
    except GatewayError as exc:
        rec.cut = "upstream_cut"
        rec.error_type = exc.code or exc.type
        if not isinstance(exc, (UpstreamTimeout, UpstreamProtocolError)):
            rec.error_type = exc.code or "upstream_error"
        log.warning("stream ended by an upstream failure after the first byte",
                    extra={"provider": rec.provider, "error": rec.error_type})
        yield pending + error_frame(exc)
    except asyncio.CancelledError:  # cancelled while waiting for upstream bytes
        if not cut_by_shutdown():
            rec.cut = "client_disconnected"
            raise
        # the shutdown's grace period ran out: the client is still there, tell it why the
        # stream ends (the error event convention) instead of a truncated answer
        absorb_shutdown_cut()
        rec.cut, rec.error_type = SHUTDOWN_CUT, SHUTDOWN_ERROR
        yield pending + error_frame(shutdown_error())
    except GeneratorExit:  # closed by the HTTP layer: the client left, or its task was cut
        if not completed and not rec.cut:  # (rec.cut already set: the HTTP layer said why)
            if cut_by_shutdown():
                rec.cut, rec.error_type = SHUTDOWN_CUT, SHUTDOWN_ERROR
            else:
                rec.cut = "client_disconnected"
        raise
    except Exception:
        log.exception("stream relay failed", extra={"provider": rec.provider})
        rec.cut, rec.error_type = "upstream_cut", "internal_error"
        yield pending + error_frame(UpstreamProtocolError(
            "the gateway could not relay the rest of the upstream stream",
            code="internal_error"))
    finally:
        start.response.close()
        _take_usage(enc, rec)


def _take_usage(enc: ChunkEncoder, rec: UsageRecord) -> None:
    u = enc.usage
    if u is not None:
        rec.prompt_tokens = u.prompt_tokens
        rec.completion_tokens = u.completion_tokens
        rec.cached_tokens = u.cached_tokens
        rec.reasoning_tokens = u.reasoning_tokens
    elif rec.cut and enc.chunks:
        # the stream ended before the provider reported usage: count what was received (about
        # one token per delta chunk) and say that it is an estimate
        rec.completion_tokens = max(enc.chunks - 2, 1)
        rec.extra["usage_estimated"] = True
