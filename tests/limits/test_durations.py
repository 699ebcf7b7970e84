from __future__ import annotations

import pytest

from gateway.limits.durations import format_duration, parse_duration


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (-3, "0s"), (0.012, "12ms"), (0.0001, "1ms"), (0.999, "999ms"), (1, "1s"),
    (1.5, "1.5s"), (59.972, "59.972s"), (60, "1m0s"), (360, "6m0s"), (361.25, "6m1.25s"),
    (3723.5, "1h2m3.5s"), (7200, "2h0m0s"),
])
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text,seconds", [
    ("12ms", 0.012), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("59.97s", 59.97),
    ("0", 0.0), ("500us", 0.0005),
])
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")
