"""Fire-and-forget reconciles that `close()` still waits for."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from gateway.aio import running_loop

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Keeps strong references to spawned tasks and logs their failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background reconcile failed: %r", task.exception())

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def __len__(self) -> int:
        return len(self._tasks)
