"""Thin handlers: decode → pipeline → encode."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from aiohttp import web

from gateway.errors import BodyTooLarge, GatewayError, InvalidRequest, ServiceUnavailable
from gateway.http.keys import RECORD_ID, REQUEST_ID, STATE
from gateway.http.middleware import HEAD_SENT, close_connection
from gateway.metrics import exposition
from gateway.pipeline import Reply, RequestContext, StreamReply
from gateway.sse import DONE
from gateway.streaming import error_frame
from gateway.types import dumps, loads

log = logging.getLogger(__name__)
_JSON = "application/json"


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than server.max_body_mb "
                        f"({limit / (1024 * 1024):g} MiB)")  # not `//`: 0.5 MiB is not "0 MiB"


def check_content_type(ctype: str) -> None:
    """`ctype` is the media type without parameters (aiohttp's `request.content_type`)."""
    if ctype != _JSON and not ctype.endswith("+json"):
        raise InvalidRequest(f"Content-Type must be application/json, got '{ctype or 'none'}'",
                             code="unsupported_content_type")


def decode_json(raw: bytes | bytearray) -> tuple[Any, int]:
    try:
        return loads(raw), len(raw)
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") \
            from None


async def read_json(request: web.Request) -> tuple[Any, int]:
    if request.headers.get("Content-Type") != _JSON:  # the plain header needs no parsing
        check_content_type(request.content_type)
    limit = request.app[STATE].max_body
    try:
        length = request.content_length
    except ValueError:  # digits Python will not convert (over 4300 of them): not a length
        raise InvalidRequest("the Content-Length header is not a valid length",
                             code="invalid_request") from None
    if length is not None and length > limit:
        raise too_large(limit)
    try:
        if length and "Content-Encoding" not in request.headers:
            # the size is known and within the limit: one read of exactly that many bytes
            raw = await request.content.readexactly(length)
        else:  # chunked or compressed: aiohttp's read enforces client_max_size as it goes
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    except asyncio.IncompleteReadError as exc:
        raw = exc.partial  # what `read()` would have returned: then judged as JSON below
    return decode_json(raw)


def context(headers: Mapping[str, str], request_id: str, record_id: str) -> RequestContext:
    trace = headers.get("x-modelyard-trace", "") in ("1", "true")
    ctx = RequestContext(request_id, None, time.perf_counter(), time.time(),
                         trace=trace, record_id=record_id)
    if "traceparent" in headers:
        ctx.trace_headers = {k: headers[k] for k in ("traceparent", "tracestate")
                             if k in headers}
    return ctx


def _context(request: web.Request) -> RequestContext:
    return context(request.headers, request[REQUEST_ID], request[RECORD_ID])


async def send(request: web.Request, reply: Reply | StreamReply) -> web.StreamResponse:
    if isinstance(reply, Reply):
        return web.Response(status=reply.status, body=reply.body, content_type=_JSON,
                            headers=reply.headers)
    reply.headers["x-request-id"] = request[REQUEST_ID]
    # chunked over HTTP/1.1 (aiohttp's default without a length); over HTTP/1.0, which has no
    # chunked encoding, the stream ends with the connection
    resp = web.StreamResponse(status=200, headers=reply.headers)
    frames = reply.frames
    last = b""
    try:
        await resp.prepare(request)
        request[HEAD_SENT] = True
        async for frame in frames:
            await resp.write(frame)
            last = frame
    except ConnectionResetError:
        pass  # the client left: closing the frames below cancels the upstream call
    except Exception:
        if not resp.prepared:
            raise  # nothing was sent: the error middleware answers
        # After the head an error answer would be a second answer on the connection, inside
        # this one's body: end the stream with the error event instead (or close).
        log.exception("the stream failed after its head was sent",
                      extra={"request_id": request[REQUEST_ID]})
        reply.fail()  # before the frames close: the record says the gateway cut it
        await _end_stream(request, resp, ended=last.endswith(DONE))
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
        reply.abandon()  # records and closes upstream if the frames never started
    return resp


async def _end_stream(request: web.Request, resp: web.StreamResponse, ended: bool) -> None:
    """End a stream that failed after its head: its `[DONE]` already went out (`ended`): the
    body just ends; else one final error event, as after any failure past the commit point. If
    even that cannot be written, the connection closes."""
    try:
        if not ended:
            await resp.write(error_frame(GatewayError(
                "the gateway failed while relaying the stream", code="internal_error")))
        return  # aiohttp ends the body (the chunked terminator) once the handler returns
    except Exception:
        log.warning("could not end the failed stream: closing the connection",
                    extra={"request_id": request[REQUEST_ID]})
    close_connection(request)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    svc = request.app[STATE].services
    reply = await svc.pipeline.chat(_context(request), request.headers, lambda: read_json(request))
    return await send(request, reply)


async def embeddings(request: web.Request) -> web.StreamResponse:
    svc = request.app[STATE].services
    reply = await svc.pipeline.embeddings(_context(request), request.headers,
                                          lambda: read_json(request))
    return await send(request, reply)


async def models(request: web.Request) -> web.Response:
    svc = request.app[STATE].services
    principal = await svc.auth.authenticate(request.headers)
    data = []
    for mid in svc.routes.listed_models():
        try:
            route_id = svc.routes.resolve(mid).route.id
        except Exception:
            continue
        if principal.may_use(mid, route_id):
            data.append({"id": mid, "object": "model", "created": 0,
                         "owned_by": mid.split("/", 1)[0] if "/" in mid else "modelyard"})
    return web.Response(body=dumps({"object": "list", "data": data}), content_type=_JSON)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    problem = state.not_ready_reason()
    if problem:
        raise ServiceUnavailable(f"not ready: {problem}", code="not_ready")
    return web.Response(body=b'{"status":"ready"}', content_type=_JSON)


async def metrics(request: web.Request) -> web.Response:
    body, ctype = exposition()
    resp = web.Response(body=body)
    resp.headers["content-type"] = ctype
    return resp
