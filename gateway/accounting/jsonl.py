"""A JSON-lines usage log: one JSON object (a `UsageRecord.to_dict()`) per line.

Used as a writer behind `UsageSink` (in-process mode, and optionally next to Redis). Each batch
is appended with one `write` in a worker thread, so the event loop never waits on the disk; the
file is opened per batch, so an external log rotation (move + new file) is picked up.

A write the sink gave up on (its timeout) may still finish in its thread; the sink then writes
the batch again. The writer remembers the ids of the last records it appended and appends only
the records not among them, one append at a time, so such a retry adds no line twice.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence

from gateway.accounting.memory_store import dedup_key
from gateway.accounting.record import UsageRecord
from gateway.types import dumps_lenient, loads

log = logging.getLogger(__name__)


REMEMBERED = 4096  # ids of the last records appended (a retried batch is at most a batch)

Line = tuple[tuple[str, str], bytes]  # (the record's identity, its line)


class JsonlWriter:
    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()  # one append at a time, in whichever thread
        self._recent: deque[tuple[str, str]] = deque()
        self._recent_set: set[tuple[str, str]] = set()

    def _append(self, lines: list[Line]) -> None:
        with self._lock:
            fresh = [(ident, line) for ident, line in lines if ident not in self._recent_set]
            if not fresh:
                return
            self._write_file(b"".join(line for _, line in fresh))
            for ident, _ in fresh:
                self._recent.append(ident)
                self._recent_set.add(ident)
            while len(self._recent) > REMEMBERED:
                self._recent_set.discard(self._recent.popleft())

    def _write_file(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        # orjson encodes the dataclass itself: the same object as `to_dict()`, without the copy
        lines = [(dedup_key(r), dumps_lenient(r) + b"\n") for r in records]
        await asyncio.to_thread(self._append, lines)
        return len(records)

    async def close(self) -> None:
        return None


def read_jsonl(path: str | Path) -> Iterator[UsageRecord]:
    """The records of a usage log, in order; unreadable lines are logged and skipped (a crash
    may leave a torn last line)."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield UsageRecord.from_dict(loads(line))
            except (ValueError, TypeError) as exc:
                log.warning("usage log %s line %d skipped: %s", p.name, n, type(exc).__name__)
