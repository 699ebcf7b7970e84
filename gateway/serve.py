"""`modelyard serve`: one process, or N worker processes sharing the port with SO_REUSEPORT.

SIGTERM/SIGINT: readiness turns false at once, the listener closes (idle keep-alive connections
too), in-flight requests and streams get `server.shutdown_grace_s` to finish (then they are cut),
usage buffers flush, exit 0. A second SIGTERM/SIGINT while draining is logged and ignored.
SIGHUP: reload the config (refused when invalid; the old one keeps serving).

With `server.metrics_port`, that listener also answers /healthz and /readyz and stays open until
the process exits: probes there see readiness false during the drain.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import Any

from gateway import logs

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LATE_REQUEST_S = 1.0
GC_GEN0_THRESHOLD = 10_000  # allocations between young collections (Python: 700)


def serve(config_path: str, *, host: str | None, port: int | None, workers: int | None,
          log_format: str | None, reuse_port: bool = False) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    n = workers if workers is not None else cfg.server.workers
    if n < 1:
        print("modelyard serve: --workers must be at least 1", file=sys.stderr)
        return 2
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


async def _serve_one(cfg: Any, config_path: str, host: str | None, port: int | None,
                     reuse_port: bool) -> int:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.http.fastrunner import FastRunner
    from gateway.http.keys import STATE

    started = time.perf_counter()
    app = create_app(cfg, config_path)
    state = app[STATE]
    app.middlewares.insert(0, state.track_requests())  # outermost: the drain waits on these
    grace = cfg.server.shutdown_grace_s
    # The drain (state.drain) enforces the grace period; aiohttp's own shutdown then only meets
    # requests that raced the listener's close (it waits up to twice its timeout for them).
    # FastRunner: the hot endpoints are served by gateway.http.fastserver, the rest by aiohttp
    runner = FastRunner(app, handler_cancellation=True, access_log=None, handle_signals=False,
                           shutdown_timeout=min(grace, LATE_REQUEST_S))
    await runner.setup()
    bind_host = host or cfg.server.host
    bind_port = port if port is not None else cfg.server.port
    try:
        await web.TCPSite(runner, bind_host, bind_port, reuse_port=reuse_port or None,
                          backlog=2048).start()
        probes = await _start_metrics_listener(cfg, state, bind_host, reuse_port)
    except OSError as exc:
        log.error("cannot listen: %s", exc, extra={"host": bind_host, "port": bind_port})
        await runner.cleanup()
        return 1
    except BaseException:
        await runner.cleanup()
        raise
    stop = asyncio.Event()
    _install_signal_handlers(state, stop)
    log.info("modelyard ready", extra={
        "host": bind_host, "port": bind_port, "pid": os.getpid(),
        "startup_ms": round((time.perf_counter() - started) * 1000),
        "since_exec_ms": _since_exec_ms()})
    _tune_gc()
    await stop.wait()
    await _drain(runner, probes, state, grace)
    return 0


def _tune_gc() -> None:
    """Start-up objects (modules, config, compiled routes, pools) live until exit: `gc.freeze()`
    moves them out of the collector's sight so that full collections stay short (a latency tail
    otherwise), and young collections run less often (request objects are freed by reference
    counting; the collector only has cycles to find)."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)


def _since_exec_ms() -> int | None:
    """Milliseconds since this process started (Linux /proc; 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round((uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000)


def _install_signal_handlers(state: Any, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_stop(signame: str) -> None:
        if state.stopping:
            log.warning("%s while shutting down: still draining in-flight requests", signame)
            return
        state.begin_shutdown()  # readiness false now, before the listener closes
        log.info("%s received: shutting down", signame)
        stop.set()

    def on_hup() -> None:
        log.info("SIGHUP received: reloading the config")
        state.reload()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hup)


async def _drain(runner: Any, probes: Any, state: Any, grace: float) -> None:
    """Listener closed, in-flight requests finish (or are cut after `grace`), usage flushed."""
    t0 = time.perf_counter()
    for site in list(runner.sites):
        await site.stop()  # the listening socket closes: new connections are refused
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close; busy ones after reply
    log.info("shutting down: listener closed, draining in-flight requests",
             extra={"grace_s": grace, "inflight": state.inflight})
    cut = await state.drain(grace)
    # The app's cleanup_ctx in reverse: lifecycle tasks, recorder drain, usage sink flush,
    # state backend, upstream sessions.
    await runner.cleanup()
    await state.aclose()
    if probes is not None:
        await probes.cleanup()
    log.info("stopped", extra={"drain_ms": round((time.perf_counter() - t0) * 1000), "cut": cut})


async def _start_metrics_listener(cfg: Any, state: Any, host: str, reuse_port: bool) -> Any:
    """`/metrics`, `/healthz` and `/readyz` on `server.metrics_port`, open until exit."""
    if cfg.server.metrics_port is None:
        return None
    from aiohttp import web

    from gateway.http import handlers
    from gateway.http.keys import STATE
    from gateway.http.middleware import request_id_and_errors

    app = web.Application(middlewares=[request_id_and_errors])
    app[STATE] = state
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.server.metrics_host or host, cfg.server.metrics_port,
                          reuse_port=reuse_port or None).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _supervise(n: int, config_path: str, host: str | None, port: int | None,
               log_format: str | None) -> int:
    """Start N workers; forward SIGTERM/SIGINT/SIGHUP to them; exit 0 when all stopped cleanly.

    A worker that exits on its own (a crash, a port it cannot bind) stops the others and the
    supervisor exits 1, so that the orchestrator restarts the whole set.
    """
    import shutil
    import subprocess
    import tempfile

    env = dict(os.environ)
    own_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelyard-metrics-")
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", config_path, "--workers", "1",
           "--reuse-port"]
    for flag, value in (("--host", host), ("--port", port), ("--log-format", log_format)):
        if value is not None and value != "":
            cmd += [flag, str(value)]
    alive: dict[int, Any] = {}  # pid -> Popen; only _reap() reaps, so these pids stay ours
    stopping = [False]

    def forward(sig: int, _frame: object) -> None:
        if sig != signal.SIGHUP:
            stopping[0] = True
        for pid in list(alive):
            _kill(pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (*STOP_SIGNALS, signal.SIGHUP)}
    try:
        for _ in range(n):
            if stopping[0]:
                break
            proc = subprocess.Popen(cmd, env=env)
            alive[proc.pid] = proc
        log.info("supervisor started workers", extra={"workers": list(alive), "pid": os.getpid()})
        return _reap(alive, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _reap(alive: dict[int, Any], stopping: list[bool]) -> int:
    failed = False
    while alive:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        proc = alive.pop(pid, None)
        if proc is None:
            continue
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        if code != 0:
            failed = True
        if not stopping[0]:
            failed = True
            stopping[0] = True
            log.error("worker exited on its own: stopping the other workers",
                      extra={"worker_pid": pid, "exit_code": code})
            for other in list(alive):
                _kill(other, signal.SIGTERM)
    return 1 if failed else 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
