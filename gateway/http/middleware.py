"""Request id, errors → OpenAI JSON, body limits. Tracebacks are logged, never sent.

An error after a response head went out (a stream) is never a second answer on the connection:
the connection closes instead (`HEAD_SENT`); `handlers.send` ends its own streams with the
error event before it comes to that.
"""
from __future__ import annotations

import logging
import asyncio
import itertools
import os
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.keys import RECORD_ID, REQUEST_ID
from gateway.types import dumps

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# set by a handler once its response head went out (a stream): from then on an error can no
# longer be an HTTP answer of its own
HEAD_SENT: web.RequestKey[bool] = web.RequestKey("head_sent", bool)


def close_connection(request: web.Request) -> None:
    """Close the request's connection: after a response head, the only error signal left."""
    request.protocol.force_close()


def error_response(exc: GatewayError, request_id: str) -> web.Response:
    status, body, headers = error_parts(exc, request_id)
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)


def error_parts(exc: GatewayError, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    """A gateway error as its OpenAI JSON answer: (status, body, headers)."""
    headers = dict(exc.headers)
    headers["x-request-id"] = request_id
    return exc.status, dumps(exc.to_json()), headers


def internal_error_parts(request_id: str) -> tuple[int, bytes, dict[str, str]]:
    """A bug: the client gets the request id to report, never the traceback (logged)."""
    body = {"error": {"message": f"internal error (request id {request_id})",
                      "type": "server_error", "param": None, "code": "internal_error"}}
    return 500, dumps(body), {"x-request-id": request_id}


class _RequestIds:
    """Unique request ids without a uuid4 per request: a random 64-bit prefix per process and
    a counter (`3f9c0a1b2c3d4e5f-1a2b`); unique across replicas and restarts in practice."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_ids = _RequestIds()


def request_ids(headers: Any) -> tuple[str, str]:
    """(the id echoed in x-request-id: the client's own when it sent one, at most 128
    characters; the gateway's own unique id, by which usage records are counted once)."""
    own = _ids.next()
    rid = headers.get("x-request-id") or own
    if not rid.isascii():  # header bytes that are not UTF-8 arrive as surrogates: U+FFFD, or
        # the usage record that carries the id could never be written as JSON
        rid = rid.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(rid) > 128:
        rid = rid[:128]
    return rid, own


@web.middleware
async def request_id_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid, own = request_ids(request.headers)
    request[REQUEST_ID] = rid  # echoed: the client's own when it sent one
    request[RECORD_ID] = own  # unique per request: usage records are counted once by it
    try:
        resp = await handler(request)
    except Exception as exc:
        if request.get(HEAD_SENT):
            return _after_head(request, exc, rid)
        return _error_answer(exc, rid)
    if not resp.prepared:
        resp.headers["x-request-id"] = rid
    return resp


def _after_head(request: web.Request, exc: Exception, rid: str) -> web.StreamResponse:
    """An error after the response head went out (a handler that does not end its own stream):
    a second answer would land inside the first one's body, so the connection closes instead."""
    log.error("error after the response head was sent: closing the connection",
              exc_info=exc, extra={"request_id": rid})
    close_connection(request)
    return web.Response(status=500)  # never written: the connection is closed


def _error_answer(exc: Exception, rid: str) -> web.StreamResponse:
    if isinstance(exc, GatewayError):
        return error_response(exc, rid)
    if isinstance(exc, web.HTTPException):
        status = exc.status
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            status, "http_error")
        body = {"error": {"message": exc.reason if status != 413 else
                          "the request body is larger than server.max_body_mb",
                          "type": "invalid_request_error", "param": None, "code": code}}
        headers = {"x-request-id": rid}
        if "Allow" in exc.headers:  # 405: which methods the path takes
            headers["Allow"] = exc.headers["Allow"]
        return web.Response(status=status, body=dumps(body), content_type="application/json",
                            headers=headers)
    log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
    status, body_bytes, headers = internal_error_parts(rid)
    return web.Response(status=status, body=body_bytes, content_type="application/json",
                        headers=headers)


def tracking(inflight: set[asyncio.Task[Any]]) -> Any:
    """The outermost middleware: keeps each in-flight request's task (streams included, as their
    handler returns after the last frame) so that a graceful shutdown can wait for them."""

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        inflight.add(task)
        try:
            return await handler(request)
        finally:
            inflight.discard(task)

    return track
