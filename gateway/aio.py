"""`running_loop()`: `asyncio.get_running_loop()` without a system call per call.

CPython's `get_running_loop()` calls `getpid()` each time to notice a fork; on this kind of
virtual machine a system call costs microseconds, and the request path asked for the loop
3-4 times per request. The loop found is kept with the thread that found it, and reused while
it is still running in that thread (a process does not fork with a running loop here).
"""
from __future__ import annotations

import asyncio
import threading

_cached: tuple[int, asyncio.AbstractEventLoop] | None = None


def running_loop() -> asyncio.AbstractEventLoop:
    """The running event loop of this thread; RuntimeError when there is none."""
    global _cached
    cached = _cached
    tid = threading.get_ident()
    if cached is not None and cached[0] == tid and cached[1].is_running():
        return cached[1]
    loop = asyncio.get_running_loop()
    _cached = (tid, loop)
    return loop
