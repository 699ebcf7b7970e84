"""The non-blocking usage sink: the response path hands records over, a background task writes.

`UsageSink.submit(record)` is synchronous, O(1), never blocks and never raises: it appends to a
bounded buffer per writer (a store, the JSON-lines file). One task per writer takes batches from
its buffer and writes them; when a write fails (store slow, down, timing out) the batch goes
back to the front of the buffer and is retried with exponential backoff, so nothing within the
bound is lost across an outage. When a buffer is full, records are dropped by policy
(`newest`: refuse the incoming record, `oldest`: evict the oldest waiting one), counted in
`dropped` and reported to `on_drop` (e.g. a Prometheus counter's `inc`).

A request id submitted twice is ignored by the sink (and by the stores, across processes).
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from typing import Callable, Literal, Sequence

from gateway.accounting.memory_store import UsageWriter, dedup_key
from gateway.accounting.record import UsageRecord

log = logging.getLogger(__name__)

DropPolicy = Literal["newest", "oldest"]


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("usage: writer task stopped", exc_info=task.exception())


class _Lane:
    """One writer's buffer and background task."""

    def __init__(self, writer: UsageWriter, sink: "UsageSink") -> None:
        self.writer = writer
        self.sink = sink
        self.buffer: deque[UsageRecord] = deque()
        self.inflight = 0
        self.wake = asyncio.Event()  # new records (or a flush) for an idle lane
        self.kick = asyncio.Event()  # flush() or close(): retry now, not after the backoff
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self.buffer) + self.inflight

    def offer(self, record: UsageRecord) -> bool:
        buffer = self.buffer
        if len(buffer) + self.inflight >= self.sink.max_buffer:
            if self.sink.drop_policy == "newest" or not buffer:
                return False
            buffer.popleft()
            self.sink._count_drop(1)
        buffer.append(record)
        self.idle.clear()
        self.wake.set()
        return True

    def _take(self) -> list[UsageRecord]:
        n = min(len(self.buffer), self.sink.batch_size)
        batch = [self.buffer.popleft() for _ in range(n)]
        self.inflight = n
        return batch

    def _give_back(self, batch: Sequence[UsageRecord]) -> None:
        self.buffer.extendleft(reversed(batch))
        self.inflight = 0
        over = len(self.buffer) - self.sink.max_buffer
        if over > 0:  # new records arrived while the batch was out: keep the bound
            for _ in range(over):
                if self.sink.drop_policy == "newest":
                    self.buffer.pop()
                else:
                    self.buffer.popleft()
            self.sink._count_drop(over)

    async def _write(self, batch: Sequence[UsageRecord]) -> bool:
        try:
            await asyncio.wait_for(self.writer.write_batch(batch), self.sink.write_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure means "retry later"
            self.failures += 1
            if self.failures == 1 or self.failures % 50 == 0:
                log.warning("usage: writing %d records to %s failed (%s), %d waiting; retrying",
                            len(batch), type(self.writer).__name__, type(exc).__name__,
                            self.pending)
            return False
        if self.failures:
            log.info("usage: %s writable again after %d failures", type(self.writer).__name__,
                     self.failures)
        self.failures = 0
        self.written += len(batch)
        return True

    async def _backoff(self) -> None:
        base = self.sink.backoff_initial_s * (2 ** min(self.failures - 1, 16))
        delay = min(self.sink.backoff_max_s, base) * random.uniform(0.5, 1.0)
        try:  # a flush() or close() cuts the wait short; new records do not (no retry storm)
            await asyncio.wait_for(self.kick.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def run(self) -> None:
        while True:
            if not self.buffer:
                self.idle.set()
                if self.sink.closing:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            if len(self.buffer) < self.sink.batch_size and not self.sink.closing \
                    and self.sink.linger_s and not self.sink.flushing:
                await asyncio.sleep(self.sink.linger_s)  # gather a batch: one write, not many
            batch = self._take()
            self.kick.clear()  # a flush() during the write cuts the next backoff short
            if await self._write(batch):
                self.inflight = 0
                continue
            self._give_back(batch)
            if self.sink.closing and self.sink.give_up:
                return
            await self._backoff()


class UsageSink:
    """Bounded, non-blocking buffer in front of one or more usage writers."""

    def __init__(
        self,
        writers: UsageWriter | Sequence[UsageWriter],
        *,
        max_buffer: int = 10_000,
        batch_size: int = 256,
        drop_policy: DropPolicy = "newest",
        on_drop: Callable[[int], None] | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        write_timeout_s: float = 10.0,
        max_seen: int = 10_000,  # ids remembered to count a record once (~250 B each)
        linger_s: float = 0.05,
    ) -> None:
        if isinstance(writers, Sequence):
            self.writers = list(writers)
        else:
            self.writers = [writers]
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be >= 1")
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.drop_policy: DropPolicy = drop_policy
        self.on_drop = on_drop
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.write_timeout_s = write_timeout_s
        self.linger_s = linger_s  # how long a lane waits to fill a batch before writing
        self.flushing = 0
        self.dropped = 0
        self.duplicates = 0
        self.closing = False
        self.give_up = False
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_seen = max_seen
        self._lanes: list[_Lane] = []

    # ------------------------------------------------------------ the response path

    def submit(self, record: UsageRecord) -> bool:
        """Hand a record over. Never blocks, never raises; False when it was not taken
        (duplicate request id, full buffer, sink closed)."""
        try:
            return self._submit(record)
        except Exception:  # noqa: BLE001 - must never fail a response
            log.exception("usage: submit failed")
            return False

    def _submit(self, record: UsageRecord) -> bool:
        ident = dedup_key(record)
        if ident in self._seen:
            self.duplicates += 1
            return False
        if self.closing or not self._lanes:
            log.warning("usage: record %s submitted while the sink is not running; dropped",
                        record.request_id)
            self._count_drop(1)
            return False
        lanes = self._lanes
        taken = 0
        for lane in lanes:
            taken += lane.offer(record)
        if taken < len(lanes):
            self._count_drop(len(lanes) - taken)
        if not taken:
            return False
        seen = self._seen
        seen[ident] = None
        if len(seen) > self._max_seen:
            seen.popitem(last=False)
        return True

    def _count_drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            try:
                self.on_drop(n)
            except Exception:  # noqa: BLE001
                log.exception("usage: on_drop callback failed")

    # ------------------------------------------------------------ lifecycle

    @property
    def pending(self) -> int:
        """Records waiting to be written (summed over writers)."""
        return sum(lane.pending for lane in self._lanes)

    async def start(self) -> None:
        if self._lanes:
            return
        self.closing = self.give_up = False
        self._lanes = [_Lane(w, self) for w in self.writers]
        for lane in self._lanes:
            lane.task = asyncio.create_task(lane.run(), name=f"usage-sink-{type(lane.writer).__name__}")
            lane.task.add_done_callback(_log_crash)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is written (retrying now, not after the
        backoff). True when the buffers emptied within `timeout_s`."""
        self.flushing += 1  # no lingering for a fuller batch while someone waits
        try:
            for lane in self._lanes:
                lane.wake.set()
                lane.kick.set()
            waits = [lane.idle.wait() for lane in self._lanes]
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            except asyncio.TimeoutError:
                return False
            return True
        finally:
            self.flushing -= 1

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking records, write what is buffered (for up to `timeout_s`), stop the tasks
        and close the writers. Records still unwritten are logged and counted as dropped."""
        self.closing = True
        flushed = await self.flush(timeout_s)
        self.give_up = True
        for lane in self._lanes:
            lane.wake.set()
            lane.kick.set()
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self._lanes if lane.task), return_exceptions=True)
        lost = sum(lane.pending for lane in self._lanes)
        if not flushed and lost:
            log.error("usage: %d records could not be written before shutdown", lost)
            self._count_drop(lost)
        for lane in self._lanes:
            try:
                await lane.writer.close()
            except Exception:  # noqa: BLE001
                log.exception("usage: closing %s failed", type(lane.writer).__name__)
        self._lanes = []
