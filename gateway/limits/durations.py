"""OpenAI's duration form for `x-ratelimit-reset-*` headers ("1s", "6m0s", "12ms", "1h2m3.5s").

It is Go's `time.Duration` string: under one second a whole number of milliseconds, else
hours, minutes and seconds with the seconds' fraction trimmed (millisecond precision here).
"""
from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


_TEXTS: dict[int, str] = {}  # milliseconds -> text: rate-limit headers repeat a few values
_TEXTS_MAX = 4096


def format_duration(seconds: float) -> str:
    """`0.012` → "12ms", `1` → "1s", `360` → "6m0s", `3723.5` → "1h2m3.5s"; negatives → "0s"."""
    ms = math.ceil(max(0.0, seconds) * 1000 - 1e-9)
    text = _TEXTS.get(ms)
    if text is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        text = _TEXTS[ms] = _format_ms(ms)
    return text


def _format_ms(ms: int) -> str:
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    sec = f"{secs}.{frac:03d}".rstrip("0") if frac else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"


def parse_duration(text: str) -> float:
    """Inverse of `format_duration` (accepts any Go duration, e.g. an upstream's "59.97s")."""
    s = text.strip()
    if s in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(f"not a duration: {text!r}")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total
