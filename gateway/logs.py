"""Logging set-up: one JSON object per line (default) or readable text for a terminal."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

from gateway.aio import running_loop
from gateway.types import dumps_lenient

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _default(obj: Any) -> Any:
    """What orjson cannot encode by itself (sets, paths, exceptions, ...) is logged as text."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def _json(out: dict[str, Any]) -> str:
    return dumps_lenient(out, _default).decode()  # a log line is never lost to its extras


class _UtcStamp:
    """`2026-01-02T03:04:05.678Z`; the seconds part is formatted once per second."""

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")  # one tuple: read and replaced atomically

    def __call__(self, created: float, msecs: float) -> str:
        sec = int(created)
        last = self._last
        if last[0] != sec:
            last = self._last = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)))
        return f"{last[1]}.{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamp = _UtcStamp()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.stamp(record.created, record.msecs),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in _STD:
                if isinstance(v, dict) and k == "access":
                    out.update(v)
                else:
                    out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _json(out)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STD}
        access = extras.pop("access", None)
        if isinstance(access, dict):
            extras.update(access)
        tail = " ".join(f"{k}={v}" for k, v in extras.items() if v not in (None, ""))
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} " \
               f"{record.levelname:<7} {record.name}: {record.getMessage()} {tail}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Access lines are held at most this long (a crash loses at most this much of the access log,
# never usage accounting), or until this many are held
ACCESS_FLUSH_S = 0.05
ACCESS_FLUSH_LINES = 256


class AccessWriter:
    """Writes the access log's one line per request: `write(fields)` logs `msg` at INFO with
    the fields as the `access` extra.

    When the logging set-up is the gateway's own (the logger's records reach exactly one plain
    `StreamHandler` with a `JsonFormatter`, no filters anywhere, stock logger and record
    classes), the line is built and written here, under the handler's lock: the same text
    `JsonFormatter` gives, without a `LogRecord` and the handler chain (about a third of the
    cost). Any other set-up (text format, extra handlers, test capture) goes through `logging`.
    """

    def __init__(self, logger: logging.Logger, msg: str = "request",
                 flush_s: float = ACCESS_FLUSH_S) -> None:
        self.logger = logger
        self.msg = msg
        self.stamp = _UtcStamp()
        # inside an event loop lines are held and leave together, `flush_s` after the first
        # one (0: when the loop iteration ends) or once ACCESS_FLUSH_LINES are held: a write
        # system call per line was ~4 % of a request's CPU. Outside a loop, each line at once.
        self.flush_s = flush_s
        self._pending: list[str] = []
        self._pending_to: logging.StreamHandler | None = None  # type: ignore[type-arg]

    def write(self, fields: dict[str, Any]) -> None:
        # the set-up is checked for the first line held: the lines held with it (`_pending`)
        # go where it went
        handler = self._pending_to if self._pending else self.direct_handler()
        if handler is None:
            self.logger.info(self.msg, extra={"access": fields})
            return
        ct = time.time()
        msecs = int((ct - int(ct)) * 1000) + 0.0  # as LogRecord computes it
        out: dict[str, Any] = {"ts": self.stamp(ct, msecs),
                               "level": logging.getLevelName(logging.INFO).lower(),
                               "logger": self.logger.name, "msg": self.msg}
        out.update(fields)
        line = _json(out) + handler.terminator
        try:
            loop = running_loop()
        except RuntimeError:
            self._write(handler, line, fields)
            return
        if self._pending_to is not handler:
            self.flush()
            self._pending_to = handler
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            if self.flush_s:
                loop.call_later(self.flush_s, self.flush)
            else:
                loop.call_soon(self.flush)
        elif len(pending) >= ACCESS_FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the lines held (called by the loop, and at shutdown)."""
        handler, lines = self._pending_to, self._pending
        if handler is None or not lines:
            return
        self._pending = []
        self._write(handler, "".join(lines), {"lines": len(lines)})

    def _write(self, handler: logging.StreamHandler, text: str,  # type: ignore[type-arg]
               fields: dict[str, Any]) -> None:
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(text)
            if hasattr(stream, "flush"):  # what StreamHandler.flush does, lock already held
                stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: report, never raise
            handler.handleError(self.logger.makeRecord(
                self.logger.name, logging.INFO, "", 0, self.msg, (), None,
                extra={"access": fields}))
        finally:
            handler.release()

    def direct_handler(self) -> logging.StreamHandler | None:  # type: ignore[type-arg]
        """The one handler a record of the logger would reach, if writing directly to it
        gives exactly what logging would write; else None."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO) or logger.filters \
                or type(logger) is not logging.Logger \
                or logging.getLogRecordFactory() is not logging.LogRecord:
            return None
        found = None
        node: Any = logger
        while node is not None:
            for h in node.handlers:
                if found is not None:
                    return None
                found = h
            if not node.propagate:
                break
            node = node.parent
        if type(found) is not logging.StreamHandler or found.filters \
                or found.level > logging.INFO or type(found.formatter) is not JsonFormatter:
            return None
        return found


def setup(fmt: str = "json", level: str = "info") -> None:
    # No caller lookup (a stack walk per record), thread or process names: our lines do not
    # print them, and the access log writes one line per request.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
