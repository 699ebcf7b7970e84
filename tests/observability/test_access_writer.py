"""The access log's direct writer (gateway.logs.AccessWriter): with the gateway's own logging
set-up it writes the very line `logging` + `JsonFormatter` would; any other set-up goes through
`logging` unchanged."""
from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any, Iterator

import orjson
import pytest

from gateway.logs import ACCESS_FLUSH_LINES, ACCESS_FLUSH_S, AccessWriter, JsonFormatter, TextFormatter

FIELDS: dict[str, Any] = {
    "request_id": "req-7", "key_id": "k1", "team": "t\u00e9am", "model": "chat/main",
    "provider": "up1", "upstream_model": "gpt-x", "status": 200, "stream": False,
    "prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48, "cost_usd": 0.00016,
    "latency_ms": 12.34, "attempts": 1, "fallback": None, "error": None, "cut": None,
    "big": 2 ** 70}


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler]]:  # type: ignore[type-arg]
    """A logger set up as `logs.setup` sets up the root: one StreamHandler, JsonFormatter."""
    logger = logging.getLogger("test.access_writer.direct")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, buf, handler
    logger.handlers[:] = []
    logger.filters[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def _alone(logger: logging.Logger) -> None:
    """pytest's log capture adds its handlers to non-propagating loggers too, per test phase:
    leave the gateway's handler alone, as in a served process."""
    logger.handlers[:] = [h for h in logger.handlers if type(h) is logging.StreamHandler]


def _fixed_clock(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr(time, "time", lambda: now)  # LogRecord and the writer read the same clock


@pytest.mark.parametrize("now", [1767323045.678, 1767323045.0005, 1767323045.9999])
def test_direct_line_equals_logging_line(own_logger: Any, monkeypatch: pytest.MonkeyPatch,
                                         now: float) -> None:
    logger, buf, _ = own_logger
    _alone(logger)
    writer = AccessWriter(logger)
    assert writer.direct_handler() is not None
    _fixed_clock(monkeypatch, now)
    writer.write(FIELDS)
    direct = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    logger.info("request", extra={"access": FIELDS})
    assert direct == buf.getvalue()
    line = orjson.loads(direct)
    assert line["ts"].startswith("2026-01-02T03:04:05.") and line["ts"].endswith("Z")
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert (line["level"], line["logger"], line["msg"]) == ("info", logger.name, "request")
    assert line["big"] == str(2 ** 70) and line["team"] == "t\u00e9am"


def test_next_second_gets_its_own_stamp(own_logger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    logger, buf, _ = own_logger
    _alone(logger)
    writer = AccessWriter(logger)
    for now in (1767323045.5, 1767323046.25, 1767323045.5):
        _fixed_clock(monkeypatch, now)
        writer.write({"n": 1})
    stamps = [orjson.loads(ln)["ts"] for ln in buf.getvalue().splitlines()]
    assert stamps == ["2026-01-02T03:04:05.500Z", "2026-01-02T03:04:06.250Z",
                      "2026-01-02T03:04:05.500Z"]


def _second_handler(logger: logging.Logger) -> io.StringIO:
    extra = io.StringIO()
    handler = logging.StreamHandler(extra)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return extra


def _text_formatter(logger: logging.Logger) -> io.StringIO:
    logger.handlers[0].setFormatter(TextFormatter())
    return logger.handlers[0].stream  # type: ignore[attr-defined,no-any-return]


def _handler_filter(logger: logging.Logger) -> io.StringIO:
    logger.handlers[0].addFilter(lambda rec: True)
    return logger.handlers[0].stream  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("change", [_second_handler, _text_formatter, _handler_filter])
def test_other_setups_go_through_logging(own_logger: Any, change: Any) -> None:
    logger, buf, _ = own_logger
    _alone(logger)
    seen = change(logger)
    writer = AccessWriter(logger)
    assert writer.direct_handler() is None
    writer.write({"request_id": "r-1", "status": 200})
    assert buf.getvalue().count("r-1") == 1  # the gateway's handler still got its line
    assert "r-1" in seen.getvalue()


def test_logger_filter_and_level_respected(own_logger: Any) -> None:
    logger, buf, _ = own_logger
    _alone(logger)
    writer = AccessWriter(logger)
    logger.addFilter(lambda rec: rec.access["status"] != 404)  # type: ignore[attr-defined]
    assert writer.direct_handler() is None
    writer.write({"status": 404})
    writer.write({"status": 200})
    assert [orjson.loads(ln)["status"] for ln in buf.getvalue().splitlines()] == [200]
    logger.filters[:] = []
    logger.setLevel(logging.WARNING)
    writer.write({"status": 201})
    assert len(buf.getvalue().splitlines()) == 1


def test_custom_record_factory_goes_through_logging(own_logger: Any) -> None:
    logger, buf, _ = own_logger
    _alone(logger)
    old = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = old(*args, **kwargs)
        rec.pod = "pod-1"
        return rec

    logging.setLogRecordFactory(factory)
    try:
        AccessWriter(logger).write({"status": 200})
    finally:
        logging.setLogRecordFactory(old)
    assert orjson.loads(buf.getvalue())["pod"] == "pod-1"


def test_write_error_reported_not_raised(own_logger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    logger, _, handler = own_logger
    _alone(logger)
    seen: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", seen.append)
    handler.stream = io.StringIO()
    handler.stream.close()  # writing raises ValueError
    AccessWriter(logger).write({"request_id": "r-2"})
    assert [rec.access["request_id"] for rec in seen] == ["r-2"]  # type: ignore[attr-defined]


def count_writes(handler: logging.StreamHandler) -> list[str]:  # type: ignore[type-arg]
    """The handler now writes to a buffer that lists each write it gets."""
    writes: list[str] = []

    class Counting(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return super().write(s)

    handler.setStream(Counting())
    return writes


async def test_in_a_loop_the_lines_of_one_iteration_leave_in_one_write(own_logger: Any) -> None:
    logger, buf, handler = own_logger
    _alone(logger)
    writes = count_writes(handler)
    writer = AccessWriter(logger, flush_s=0)  # at the end of the iteration
    for i in range(3):
        writer.write({**FIELDS, "request_id": f"req-{i}"})
    assert writes == []  # held until the loop moves on
    await asyncio.sleep(0)
    assert len(writes) == 1
    lines = [orjson.loads(x) for x in writes[0].splitlines()]
    assert [x["request_id"] for x in lines] == ["req-0", "req-1", "req-2"]
    writer.write({**FIELDS, "request_id": "req-3"})
    writer.flush()  # what Recorder.drain does at shutdown
    assert len(writes) == 2 and orjson.loads(writes[1])["request_id"] == "req-3"
    await asyncio.sleep(0)
    assert len(writes) == 2  # nothing twice


async def test_set_up_is_checked_once_a_flush(own_logger: Any) -> None:
    """The lines held together go where the first one went; a set-up changed meanwhile counts
    from the next flush (here at the end of each loop iteration)."""
    logger, buf, _ = own_logger
    _alone(logger)
    writer = AccessWriter(logger, flush_s=0)
    writer.write({"request_id": "r-1"})
    extra = _second_handler(logger)  # no longer the gateway's own set-up
    writer.write({"request_id": "r-2"})
    await asyncio.sleep(0)
    assert [orjson.loads(x)["request_id"] for x in buf.getvalue().splitlines()] == ["r-1", "r-2"]
    assert extra.getvalue() == ""
    writer.write({"request_id": "r-3"})  # a new iteration: through logging, both handlers
    assert "r-3" in extra.getvalue() and buf.getvalue().count("r-3") == 1


async def test_lines_are_held_flush_s_or_until_a_bound(own_logger: Any) -> None:
    """By default lines leave ACCESS_FLUSH_S after the first one is held (one write for every
    line of that time, whatever the load), or at once when ACCESS_FLUSH_LINES are held."""
    logger, buf, handler = own_logger
    _alone(logger)
    writes = count_writes(handler)
    writer = AccessWriter(logger)
    assert writer.flush_s == ACCESS_FLUSH_S > 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    writer.write({"request_id": "a"})
    await asyncio.sleep(0)
    writer.write({"request_id": "b"})  # a later iteration: still held
    await asyncio.sleep(0)
    assert writes == []
    async with asyncio.timeout(5):
        while not writes:
            await asyncio.sleep(0.005)
    assert loop.time() - t0 >= ACCESS_FLUSH_S * 0.9
    assert [orjson.loads(x)["request_id"] for x in writes[0].splitlines()] == ["a", "b"]
    for i in range(ACCESS_FLUSH_LINES):  # the bound: written at once, in one write
        writer.write({"request_id": f"n{i}"})
    assert len(writes) == 2 and len(writes[1].splitlines()) == ACCESS_FLUSH_LINES
