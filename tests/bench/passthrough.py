"""The bare aiohttp passthrough proxy (the "Python limit"): no auth, no parsing, no logging.

`python -m tests.bench.passthrough --port P --upstream http://127.0.0.1:U` forwards each POST
body to the same path on the upstream and streams the upstream's bytes back as they arrive.
"""
from __future__ import annotations

import argparse

from aiohttp import ClientSession, TCPConnector, web

FORWARD = ("content-type", "authorization", "x-api-key", "anthropic-version")
SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k in FORWARD if (v := request.headers.get(k)) is not None}
    url = request.app[UPSTREAM] + request.path
    async with request.app[SESSION].post(url, data=body, headers=headers) as up:
        resp = web.StreamResponse(status=up.status,
                                  headers={"content-type": up.headers.get("content-type", "")})
        if up.content_length is not None:
            resp.content_length = up.content_length
        try:
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client left (wrk closes its connections at the end of a run)
        return resp


async def readyz(request: web.Request) -> web.Response:
    return web.Response(text="ready")


async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    yield
    await app[SESSION].close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    import uvloop

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", proxy)
    app.router.add_get("/readyz", readyz)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
