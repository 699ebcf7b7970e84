from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from gateway.accounting.jsonl import JsonlWriter, read_jsonl
from gateway.accounting.memory_store import MemoryUsageStore
from gateway.accounting.sink import UsageSink
from tests.accounting.factory import random_records


async def test_jsonl_lines_parse_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "usage.jsonl"
    store = MemoryUsageStore()
    sink = UsageSink([store, JsonlWriter(path)], batch_size=16)
    await sink.start()
    records = random_records(50)
    for r in records:
        sink.submit(r)
    sink.submit(records[0])  # duplicate: not written twice
    await sink.close()

    lines = path.read_bytes().splitlines()
    assert len(lines) == 50
    first = orjson.loads(lines[0])
    assert first["request_id"] == records[0].request_id
    assert first["cost_usd"] == records[0].cost_usd and first["priced"] == records[0].priced
    assert [orjson.loads(x)["request_id"] for x in lines] == [r.request_id for r in records]

    # a crash may leave a torn last line: it is skipped, the rest replays
    with open(path, "ab") as f:
        f.write(b'{"request_id": "torn", "ts": 1')
    replay = MemoryUsageStore()
    assert replay.load(read_jsonl(path)) == 50
    assert await replay.key_totals("k-ads", "total") == await store.key_totals("k-ads", "total")
    assert list(read_jsonl(tmp_path / "absent.jsonl")) == []


async def test_a_record_with_an_unencodable_string_is_still_written(tmp_path: Path) -> None:
    """A lone surrogate (header bytes that were not UTF-8) or an int beyond 64 bits in a record
    must not make its batch fail for ever (the sink would retry it and lose what follows)."""
    path = tmp_path / "usage.jsonl"
    odd, plain = random_records(2)
    odd.user = "caf\udcff"
    odd.extra["client_request_id"] = "x\ud800y"
    odd.extra["big"] = 2 ** 70
    writer = JsonlWriter(path)
    assert await writer.write_batch([odd, plain]) == 2
    first, second = (orjson.loads(x) for x in path.read_bytes().splitlines())
    assert first["user"] == "caf\ufffd" and first["extra"]["client_request_id"] == "x\ufffdy"
    assert first["extra"]["big"] == str(2 ** 70) and first["request_id"] == odd.request_id
    assert second == orjson.loads(orjson.dumps(plain))  # the others exactly as before


async def test_a_write_that_timed_out_then_finished_is_not_appended_again(tmp_path: Path) -> None:
    """The sink gives up on a slow append (its timeout) and writes the batch again; the first
    append still finishes in its thread. Each record's line is in the file once."""
    path = tmp_path / "usage.jsonl"
    writer = JsonlWriter(path)
    disk = threading.Event()  # a disk that hangs until released
    real = writer._write_file

    def slow(data: bytes) -> None:
        assert disk.wait(10)
        real(data)

    writer._write_file = slow  # type: ignore[method-assign]
    records = random_records(6)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(writer.write_batch(records[:4]), 0.05)  # gave up; still running
    retry = asyncio.ensure_future(writer.write_batch(records))  # the sink's next batch: 4 + 2
    await asyncio.sleep(0)
    assert not path.exists()
    disk.set()
    assert await retry == 6
    ids = [orjson.loads(x)["request_id"] for x in path.read_bytes().splitlines()]
    assert ids == [r.request_id for r in records]  # in order, each once
    await writer.write_batch(records[4:])  # remembered: nothing appended
    assert len(path.read_bytes().splitlines()) == 6
