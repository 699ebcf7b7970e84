"""The non-blocking usage sink: the response path hands records over, a background task writes.

`UsageSink.submit(record)` is synchronous, O(1), never blocks and never raises: it appends to a
bounded buffer per writer (a store, the JSON-lines file). One task per writer takes batches from
its buffer and writes them; when a write fails for a reason that may pass (store slow, down,
timing out, busy, loading, read-only) the batch goes back to the front of the buffer and is
retried with exponential backoff, so nothing within the bound is lost across an outage. When a
buffer is full, records are dropped by policy (`newest`: refuse the incoming record, `oldest`:
evict the oldest waiting one), counted in `dropped` and reported to `on_drop` (e.g. a
Prometheus counter's `inc`).

A batch the store refuses for good (`is_permanent`: a value it cannot encode, a Redis script
error) is split in halves, each written on its own, down to the records at fault: every other
record is written, and a record that fails alone is dropped (counted in `dropped` and
`unwritable`, logged once), so one bad record never holds up the records behind it.

A request id submitted twice is ignored by the sink (and by the stores, across processes).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from typing import Callable, Literal, Sequence

from gateway.accounting.failures import is_permanent
from gateway.accounting.memory_store import UsageWriter, dedup_key
from gateway.accounting.record import UsageRecord

log = logging.getLogger(__name__)

DropPolicy = Literal["newest", "oldest"]
# records a writer refuses for good are logged one by one up to this many a window; past that
# (a store that refuses everything) they are counted and summed up in one line
UNWRITABLE_LOGGED = 10
UNWRITABLE_WINDOW_S = 60.0


def _brief(value: object, limit: int = 200, *, text_of: Callable[[object], str] = repr) -> str:
    """A value for a log line: text, cut at `limit` characters, never an exception."""
    try:
        text = value if isinstance(value, str) else text_of(value)
    except Exception:  # noqa: BLE001 - a record odd enough to be refused may be odd here too
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


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
        self.drop_window_at = -UNWRITABLE_WINDOW_S  # when the current window of drop logs began
        self.drops_logged = 0  # in that window
        self.drops_unlogged = 0  # dropped past the budget, not yet summed up

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

    async def _write(self, batch: Sequence[UsageRecord]) -> Exception | None:
        """One write of `batch`: None when it worked, else why not."""
        try:
            await asyncio.wait_for(self.writer.write_batch(batch), self.sink.write_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is classified by the caller
            return exc
        return None

    async def _write_all(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        """Write `batch`. Returns the records still to write, in order, when the store failed
        for a reason that may pass (the caller gives them back and backs off), else [].

        A part refused for good is split in halves, each written on its own (first half
        first), until a record that fails alone is dropped. A part once written is never
        written again (the JSON-lines file does not deduplicate); only a part whose write
        failed is, which the stores count once (request id)."""
        parts = [batch]  # a stack: the next part to write is the last
        while parts:
            part = parts.pop()
            exc = await self._write(part)
            if exc is None:
                self._written(len(part))
            elif not is_permanent(exc):
                self._failed(exc, len(part))
                parts.append(part)
                return [r for p in reversed(parts) for r in p]
            elif len(part) == 1:
                self._unwritable(part[0], exc)
            else:
                mid = len(part) // 2
                parts += (part[mid:], part[:mid])
        return []

    def _written(self, n: int) -> None:
        self.inflight -= n
        self.written += n
        self.sum_up_drops()
        if self.failures:
            log.info("usage: %s writable again after %d failures", type(self.writer).__name__,
                     self.failures)
        self.failures = 0

    def _failed(self, exc: Exception, n: int) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 50 == 0:
            log.warning("usage: writing %d records to %s failed (%s), %d waiting; retrying",
                        n, type(self.writer).__name__, type(exc).__name__, self.pending)

    def _unwritable(self, record: UsageRecord, exc: Exception) -> None:
        """A record the store refuses for good: dropped, counted, logged once (ids only, never
        the record: its fields are what the store choked on)."""
        self.inflight -= 1
        self.sink.unwritable += 1
        self.sink._count_drop(1)
        now = time.monotonic()
        if now - self.drop_window_at >= UNWRITABLE_WINDOW_S:
            self.sum_up_drops()
            self.drop_window_at, self.drops_logged = now, 0
        if self.drops_logged >= UNWRITABLE_LOGGED:
            self.drops_unlogged += 1
            return
        self.drops_logged += 1
        ids = {name: _brief(getattr(record, name, None)) for name in ("request_id", "key_id", "model")}
        log.error("usage: record %s (key %s, model %s) dropped: %s refused it (%s: %s)%s",
                  ids["request_id"], ids["key_id"], ids["model"], type(self.writer).__name__,
                  type(exc).__name__, _brief(exc, text_of=str),
                  "; further drops this minute are counted, not logged one by one"
                  if self.drops_logged == UNWRITABLE_LOGGED else "", extra=ids)

    def sum_up_drops(self) -> None:
        """One line for the drops past the log budget (when the window ends, the lane writes
        again, or the sink closes)."""
        if self.drops_unlogged:
            log.error("usage: %d more records dropped: %s refused them (not logged one by one)",
                      self.drops_unlogged, type(self.writer).__name__)
            self.drops_unlogged = 0

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
            left = await self._write_all(batch)
            if not left:
                continue
            self._give_back(left)
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
        self.unwritable = 0  # of `dropped`: records a writer refused for good (see is_permanent)
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
        for lane in self._lanes:
            lane.sum_up_drops()
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
