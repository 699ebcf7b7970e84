"""gateway.aio.running_loop: the running loop of this thread, never a stale or foreign one."""
from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.aio import running_loop


def test_outside_a_loop_it_raises_like_asyncio() -> None:
    with pytest.raises(RuntimeError):
        running_loop()


def test_each_loop_and_thread_gets_its_own() -> None:
    async def which() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return running_loop(), asyncio.get_running_loop()

    a, real_a = asyncio.run(which())
    b, real_b = asyncio.run(which())  # a new loop in the same thread: not the cached old one
    assert a is real_a and b is real_b and a is not b
    with pytest.raises(RuntimeError):
        running_loop()  # the cached loop has stopped

    seen: dict[str, object] = {}
    started, release = threading.Event(), threading.Event()

    async def hold() -> None:
        seen["thread"] = running_loop()
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    t = threading.Thread(target=asyncio.run, args=(hold(),))
    t.start()
    started.wait(5)

    async def here() -> None:  # the other thread's loop is running and cached: not ours
        assert running_loop() is asyncio.get_running_loop() is not seen["thread"]

    try:
        asyncio.run(here())
    finally:
        release.set()
        t.join(5)
