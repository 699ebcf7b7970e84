"""deploy/healthcheck.py, the image's HEALTHCHECK and the sidecar's exec probe."""
from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from tests.deploy.support import DEPLOY
from tests.redis_fixture import free_port

SCRIPT = DEPLOY / "healthcheck.py"


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(SCRIPT), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    return proc.returncode or 0, err.decode()


async def test_exit_status_follows_the_gateway(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    hits: list[str] = []

    async def healthz(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=503, text="draining")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    assert (await _run(f"{base}/healthz"))[0] == 0
    status, err = await _run(f"{base}/readyz")
    assert status == 1 and "503" in err
    assert (await _run(env={"MODELYARD_HEALTHCHECK_URL": f"{base}/healthz"}))[0] == 0
    assert hits == ["/healthz", "/readyz", "/healthz"]


async def test_unreachable_gateway_is_unhealthy() -> None:
    status, err = await _run(f"http://127.0.0.1:{free_port()}/healthz")
    assert status == 1 and "healthcheck" in err
