"""Logging set-up: one JSON object per line (default) or readable text for a terminal."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_INT64 = (-(2 ** 63), 2 ** 64 - 1)


def _default(obj: Any) -> Any:
    """What orjson cannot encode by itself (sets, paths, exceptions, ...) is logged as text."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def _plain(value: Any) -> Any:
    """A value orjson refused (an int beyond 64 bits somewhere), made encodable."""
    if isinstance(value, int) and not isinstance(value, bool) \
            and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in (sorted(value, key=str) if isinstance(value, (set, frozenset))
                                    else value)]
    return value


def _json(out: dict[str, Any]) -> str:
    try:
        return orjson.dumps(out, default=_default).decode()
    except TypeError:  # a log line must never be lost to its extras
        return orjson.dumps(_plain(out), default=_default).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
