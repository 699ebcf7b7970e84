"""One record a store refuses for good (a poison record) must not hold up the records behind it:
the sink splits the refused batch down to the record at fault, writes every other record once,
drops and logs only that one. Failures that may pass are still retried whole, losing nothing."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime, timezone
from typing import Sequence

import orjson
import pytest
from redis.exceptions import BusyLoadingError, DataError, NoScriptError, OutOfMemoryError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.accounting.jsonl import JsonlWriter, read_jsonl
from gateway.accounting.query import query
from gateway.accounting.record import UsageRecord
from gateway.accounting.redis_store import RedisUsageStore
from gateway.accounting import sink as sink_module
from gateway.accounting.failures import is_permanent
from gateway.accounting.sink import UNWRITABLE_LOGGED, UNWRITABLE_WINDOW_S, UsageSink
from tests.accounting.factory import make_record

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
END = datetime(2025, 3, 2, tzinfo=timezone.utc)
SECRET = "sk-live-do-not-log-me"
SINK_LOGGER = "gateway.accounting.sink"


class ScriptedWriter:
    """A writer that writes a batch all or nothing: it refuses (TypeError) any batch holding a
    poison id, and fails the attempts numbered in `transient_at` (1-based) with `transient`.
    Keeps every attempt and the ids of every batch it did write, in order."""

    def __init__(self, poison: set[str] = frozenset(), *,  # type: ignore[assignment]
                 transient_at: set[int] = frozenset(),  # type: ignore[assignment]
                 transient: Exception | None = None) -> None:
        self.poison = set(poison)
        self.transient_at = set(transient_at)
        self.transient = transient or ConnectionError("store down")
        self.attempts: list[list[str]] = []
        self.written: list[str] = []

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        ids = [r.request_id for r in records]
        self.attempts.append(ids)
        if len(self.attempts) in self.transient_at:
            raise self.transient
        bad = [i for i in ids if i in self.poison]
        if bad:
            raise TypeError(f"Type is not JSON serializable: Widget ({bad[0]})")
        self.written += ids
        return len(ids)

    async def close(self) -> None:
        return None


def _poisoned(i: int) -> UsageRecord:
    """A record as odd as a store may refuse, carrying a secret it must never log."""
    return dataclasses.replace(make_record(i, key="k-ads", model="anthropic/claude-sonnet-4-5"),
                               extra={"api_key": SECRET})


def _ids(ns: range | list[int]) -> list[str]:
    return [f"req-{i}" for i in ns]


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SINK_LOGGER and r.levelno >= logging.ERROR]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SINK_LOGGER and r.levelno == logging.WARNING]


def _sink(writer: object, **kwargs: object) -> tuple[UsageSink, list[int]]:
    drops: list[int] = []
    opts: dict[str, object] = {"batch_size": 8, "linger_s": 0, "backoff_initial_s": 0.001,
                               "backoff_max_s": 0.01, "on_drop": drops.append}
    opts.update(kwargs)
    return UsageSink(writer, **opts), drops  # type: ignore[arg-type]


async def test_a_poison_record_is_dropped_alone_and_the_lane_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    writer = ScriptedWriter({"req-5"})
    sink, drops = _sink(writer, max_buffer=20)
    await sink.start()
    for i in range(20):  # batches of 8: req-5 sits in the first
        assert sink.submit(_poisoned(i) if i == 5 else make_record(i))
    assert await sink.flush(timeout_s=10)

    assert writer.written == _ids([i for i in range(20) if i != 5])  # each once, in order
    assert (sink.dropped, sink.unwritable, sum(drops), sink.pending) == (1, 1, 1, 0)
    # the batch was split, not retried whole: its good records were never written twice
    assert writer.attempts[:7] == [_ids(range(8)), _ids(range(4)), _ids(range(4, 8)),
                                   _ids(range(4, 6)), ["req-4"], ["req-5"], _ids(range(6, 8))]
    [err] = _errors(caplog)
    msg = err.getMessage()
    for part in ("req-5", "k-ads", "anthropic/claude-sonnet-4-5", "TypeError",
                 "Type is not JSON serializable: Widget"):
        assert part in msg
    assert (err.request_id, err.key_id, err.model) == (  # type: ignore[attr-defined]
        "req-5", "k-ads", "anthropic/claude-sonnet-4-5")
    assert SECRET not in caplog.text and "prompt_tokens" not in caplog.text
    assert _warnings(caplog) == []  # a permanent refusal is no outage: no retry, no backoff

    # the lane keeps taking and writing records, up to the whole bound again
    assert all(sink.submit(make_record(i)) for i in range(20, 40))
    assert await sink.flush(timeout_s=10)
    assert writer.written[19:] == _ids(range(20, 40))
    assert (sink.dropped, len(_errors(caplog))) == (1, 1)
    await sink.close()
    assert sink.dropped == 1


async def test_a_store_refusing_everything_does_not_flood_the_log(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drops are logged one by one up to UNWRITABLE_LOGGED a window; the rest are counted and
    summed up in one line when the window ends, the store takes records again, or at close."""
    clock = [1000.0]
    monkeypatch.setattr(sink_module.time, "monotonic", lambda: clock[0])
    writer = ScriptedWriter(set(_ids(range(40))))
    sink, drops = _sink(writer, max_buffer=100)
    await sink.start()
    for i in range(25):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert (sink.dropped, sink.unwritable, sum(drops)) == (25, 25, 25)  # every drop counted
    one_by_one = [r for r in _errors(caplog) if hasattr(r, "request_id")]
    assert len(one_by_one) == UNWRITABLE_LOGGED == len(_errors(caplog))
    assert "counted, not logged one by one" in one_by_one[-1].getMessage()
    sink.submit(make_record(50))  # the store takes records again: the rest is summed up
    assert await sink.flush(timeout_s=10)
    [summary] = _errors(caplog)[UNWRITABLE_LOGGED:]
    assert "15 more records dropped: ScriptedWriter refused them" in summary.getMessage()
    clock[0] += UNWRITABLE_WINDOW_S  # a new window: one by one again
    for i in range(25, 37):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert len([r for r in _errors(caplog) if hasattr(r, "request_id")]) == 2 * UNWRITABLE_LOGGED
    await sink.close()  # the two past this window's budget
    assert "2 more records dropped" in _errors(caplog)[-1].getMessage()
    assert sink.dropped == 37 and writer.written == ["req-50"]


@pytest.mark.parametrize("poison", [{0}, {7}, {2, 3}, {1, 6}, set(range(8)), {3, 9, 15}])
async def test_every_good_record_is_written_once_whatever_the_poison(
        poison: set[int], caplog: pytest.LogCaptureFixture) -> None:
    writer = ScriptedWriter(set(_ids(sorted(poison))))
    sink, drops = _sink(writer)
    await sink.start()
    for i in range(20):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert writer.written == _ids([i for i in range(20) if i not in poison])
    assert (sink.dropped, sink.unwritable, sum(drops)) == (len(poison),) * 3
    logged = sorted(r.request_id for r in _errors(caplog))  # type: ignore[attr-defined]
    assert logged == sorted(_ids(sorted(poison)))
    await sink.close()


@pytest.mark.parametrize("exc", [
    ConnectionError("reset"), TimeoutError(), OSError("disk"), RedisConnectionError("lost"),
    RedisTimeoutError("slow"), BusyLoadingError("loading"),
    ResponseError("BUSY Redis is busy running a script"), OutOfMemoryError("maxmemory"),
    ResponseError("READONLY You can't write against a read only replica."),
])
async def test_a_transient_failure_is_retried_whole_and_loses_nothing(
        exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    writer = ScriptedWriter(transient_at={1, 2}, transient=exc)
    sink, drops = _sink(writer)
    await sink.start()
    for i in range(20):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert writer.written == _ids(range(20))
    assert writer.attempts[:3] == [_ids(range(8))] * 3  # the same batch again, not split
    assert (sink.dropped, sink.unwritable, drops) == (0, 0, [])
    assert _errors(caplog) == [] and len(_warnings(caplog)) == 1
    await sink.close()


async def test_an_outage_while_isolating_a_poison_keeps_order_and_loses_nothing() -> None:
    # attempts: 1 [0-7] refused, 2 [0-3] written, 3 [4-7] refused, 4 [4,5] fails (outage):
    # [4,5] and [6,7] go back to the front of the buffer, in order, and are retried
    writer = ScriptedWriter({"req-5"}, transient_at={4})
    sink, drops = _sink(writer)
    await sink.start()
    for i in range(12):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert writer.written == _ids([i for i in range(12) if i != 5])
    assert writer.attempts[4][:4] == _ids(range(4, 8))  # the retry starts where it stopped
    assert (sink.dropped, sink.unwritable, sum(drops), sink.pending) == (1, 1, 1, 0)
    await sink.close()


async def test_a_single_record_batch_refused_for_good_drops_only_it(
        caplog: pytest.LogCaptureFixture) -> None:
    writer = ScriptedWriter({"req-2"})
    sink, drops = _sink(writer, batch_size=1)
    await sink.start()
    for i in range(5):
        sink.submit(make_record(i))
    assert await sink.flush(timeout_s=10)
    assert writer.written == _ids([0, 1, 3, 4])
    assert writer.attempts == [[i] for i in _ids(range(5))]  # req-2 tried once, never again
    assert (sink.dropped, sink.unwritable, drops) == (1, 1, [1])
    assert [r.request_id for r in _errors(caplog)] == ["req-2"]  # type: ignore[attr-defined]
    await sink.close()


async def test_redis_store_counts_every_good_record_once_around_a_poison(redis_url: str) -> None:
    """A real store: the poison fails in the second script chunk after the first was written,
    so the split writes those 16 again: Redis counts them once (seen keys)."""
    store = RedisUsageStore(redis_url)
    sink, drops = _sink(store, batch_size=40)
    await sink.start()
    for i in range(40):
        bad = dataclasses.replace(make_record(i), prompt_tokens="many")  # type: ignore[arg-type]
        sink.submit(bad if i == 20 else make_record(i))
    assert await sink.flush(timeout_s=10)
    [row] = await query(store, start=START, end=END, group_by=[])
    assert (row["requests"], row["prompt_tokens"]) == (39, 39 * 100)
    assert (sink.dropped, sink.unwritable, drops) == (1, 1, [1])
    await sink.close()
    await store.close()


async def test_jsonl_file_holds_every_good_record_exactly_once(tmp_path: object) -> None:
    path = tmp_path / "usage.jsonl"  # type: ignore[operator]
    sink, _ = _sink(JsonlWriter(path), batch_size=16)
    await sink.start()
    for i in range(30):
        bad = dataclasses.replace(make_record(i), extra={"x": object()})  # orjson refuses it
        sink.submit(bad if i in (3, 17) else make_record(i))
    assert await sink.flush(timeout_s=10)
    assert [r.request_id for r in read_jsonl(path)] == _ids([i for i in range(30) if i not in (3, 17)])
    assert sink.unwritable == 2
    await sink.close()


@pytest.mark.parametrize("exc,permanent", [
    (TypeError("x"), True), (ValueError("x"), True), (OverflowError("x"), True),
    (orjson.JSONEncodeError("x"), True), (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"), True),
    (DataError("Invalid input of type: 'dict'"), True),
    (ResponseError("value is not an integer or out of range script: f, on @user_script:1.",
                   status_code="ERR"), True),
    (ResponseError("ERR user_script:1: attempt to index local 'x' (a nil value)"), True),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), True),
    (ConnectionError("x"), False), (TimeoutError(), False), (asyncio.TimeoutError(), False),
    (OSError("x"), False), (RuntimeError("x"), False), (KeyError("x"), False),
    (RedisConnectionError("x"), False), (RedisTimeoutError("x"), False),
    (BusyLoadingError("x"), False), (NoScriptError("No matching script."), False),
    (OutOfMemoryError("command not allowed"), False),
    (ResponseError("NOSCRIPT No matching script. Please use EVAL."), False),
    (ResponseError("BUSY Redis is busy running a script."), False),
    (ResponseError("LOADING Redis is loading the dataset in memory"), False),
    (ResponseError("READONLY You can't write against a read only replica."), False),
    (ResponseError("MASTERDOWN Link with MASTER is down"), False),
    (ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"), False),
    (ResponseError("CLUSTERDOWN The cluster is down"), False),
    (ResponseError("OOM command not allowed when used memory > 'maxmemory'."), False),
    (ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently "
                   "unable to persist to disk."), False),
    (ResponseError("Error running script (call to f_1): @user_script:57: -OOM command not "
                   "allowed when used memory > 'maxmemory'.", status_code="ERR"), False),
    (ResponseError("ERR max number of clients reached"), False),
])
def test_failures_are_permanent_only_when_clearly_so(exc: Exception, permanent: bool) -> None:
    assert is_permanent(exc) is permanent
