"""`modelyard serve`: one process, or N worker processes sharing the port with SO_REUSEPORT.

SIGTERM/SIGINT: readiness turns false at once, the listener closes, in-flight requests and
streams get `server.shutdown_grace_s` to finish, usage buffers flush, exit 0. SIGHUP: reload.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from gateway import logs

log = logging.getLogger(__name__)


def serve(config_path: str, *, host: str | None, port: int | None, workers: int | None,
          log_format: str | None, reuse_port: bool = False) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    n = workers if workers is not None else cfg.server.workers
    if n > 1 and not cfg.state.redis_url:
        print("modelyard serve: --workers > 1 needs state.redis_url in the config: limits must "
              "stay exact across processes (in-process state is per process)", file=sys.stderr)
        return 2
    logs.setup(log_format or cfg.logging.format, cfg.logging.level)
    if n > 1:
        return _supervise(n, config_path, host, port, log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; Windows has none
        pass
    return asyncio.run(_serve_one(cfg, config_path, host, port, reuse_port))


async def _serve_one(cfg: object, config_path: str, host: str | None, port: int | None,
                     reuse_port: bool) -> int:
    from aiohttp import web

    from gateway.app import create_app, metrics_app
    from gateway.config.schema import GatewayConfig
    from gateway.http.keys import STATE

    assert isinstance(cfg, GatewayConfig)
    started = time.perf_counter()
    app = create_app(cfg, config_path)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=cfg.server.shutdown_grace_s)
    await runner.setup()
    bind_host, bind_port = host or cfg.server.host, port if port is not None else cfg.server.port
    site = web.TCPSite(runner, bind_host, bind_port, reuse_port=reuse_port or None, backlog=2048)
    await site.start()
    mrunner = None
    if cfg.server.metrics_port is not None:
        mrunner = web.AppRunner(metrics_app(), access_log=None)
        await mrunner.setup()
        await web.TCPSite(mrunner, cfg.server.metrics_host or bind_host, cfg.server.metrics_port,
                          reuse_port=reuse_port or None).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[STATE].reload)
    log.info("modelyard ready", extra={"host": bind_host, "port": bind_port, "pid": os.getpid(),
                                       "startup_ms": round((time.perf_counter() - started) * 1000)})
    await stop.wait()
    app[STATE].ready = False
    log.info("shutting down: draining in-flight requests",
             extra={"grace_s": cfg.server.shutdown_grace_s})
    await runner.cleanup()
    if mrunner is not None:
        await mrunner.cleanup()
    log.info("stopped")
    return 0


def _supervise(n: int, config_path: str, host: str | None, port: int | None,
               log_format: str | None) -> int:
    """Start N workers; forward SIGTERM/SIGINT/SIGHUP; exit 0 when they have all stopped."""
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelyard-metrics-")
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", config_path, "--workers", "1",
           "--reuse-port"]
    if host:
        cmd += ["--host", host]
    if port is not None:
        cmd += ["--port", str(port)]
    if log_format:
        cmd += ["--log-format", log_format]
    children = [subprocess.Popen(cmd, env=env) for _ in range(n)]

    def forward(sig: int, _frame: object) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = [c.wait() for c in children]
    return 0 if all(code == 0 for code in codes) else 1
