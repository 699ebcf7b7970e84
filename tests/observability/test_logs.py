"""Structured logs (issue 7, item 2): one JSON access line per request with the agreed fields,
every line JSON, no secrets or prompts."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from gateway.logs import JsonFormatter, TextFormatter
from tests.fakes import FakeOpenAI, Reply, completion, error_body
from tests.observability.support import (KEY_ALPHA, KEY_IDS, KEY_SLOW, PROVIDER_KEY_1, SECRETS,
                                         auth, chat)

PROMPT = "PROMPT-TEXT-logs-b41d what is our churn"
FIELDS = ("request_id", "key_id", "team", "model", "provider", "status", "prompt_tokens",
          "completion_tokens", "cost_usd", "latency_ms", "attempts")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record of every logger, formatted by the gateway's JSON formatter."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old)


def parsed(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]  # each line is JSON


async def test_access_lines(make_gateway: Any, fakes: tuple[FakeOpenAI, FakeOpenAI],
                            json_lines: io.StringIO) -> None:
    one, _ = fakes
    client = await make_gateway()
    one.push(Reply(200, completion("ok", usage=(40, 8))))
    sent = [("ok", KEY_ALPHA, chat("chat/main", PROMPT, user="user-q-1"), 200)]
    # an upstream rejecting our credentials, quoting the key: never logged
    leak = error_body(f"Incorrect API key provided: {PROVIDER_KEY_1}. {PROMPT}",
                      code="invalid_api_key")
    one.push(Reply(401, leak))
    sent.append(("auth", KEY_ALPHA, chat("chat/solo", PROMPT), 502))
    sent.append(("stream", KEY_ALPHA, chat("chat/main", PROMPT, stream=True), 200))
    sent.append(("404", KEY_ALPHA, chat("nope/x", PROMPT), 404))
    sent.append(("rpm-ok", KEY_SLOW, chat("chat/main", PROMPT), 200))
    sent.append(("rpm-429", KEY_SLOW, chat("chat/main", PROMPT), 429))
    ids = {}
    for name, key, body, status in sent:
        r = await client.post("/v1/chat/completions", json=body, headers=auth(key))
        await r.read()
        assert r.status == status, (name, await r.text())
        ids[name] = r.headers["x-request-id"]
    records = parsed(json_lines)
    access = [r for r in records if r["logger"] == "modelyard.access"]
    assert len(access) == len(sent)
    by_id = {a["request_id"]: a for a in access}
    assert set(by_id) == set(ids.values())  # one line per request
    for a in access:
        assert set(FIELDS) <= set(a), a
        assert a["level"] == "info" and a["ts"].endswith("Z")
    ok = by_id[ids["ok"]]
    assert (ok["key_id"], ok["team"], ok["model"], ok["provider"], ok["status"]) == \
        (KEY_IDS[0], "alpha", "chat/main", "up1", 200)
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["attempts"]) == (40, 8, 1)
    assert ok["cost_usd"] == pytest.approx((40 * 2.0 + 8 * 10.0) / 1e6)
    assert ok["latency_ms"] > 0
    assert by_id[ids["auth"]]["status"] == 502 and by_id[ids["auth"]]["attempts"] == 1
    assert by_id[ids["stream"]]["stream"] is True and by_id[ids["stream"]]["status"] == 200
    assert by_id[ids["404"]]["status"] == 404 and by_id[ids["404"]]["provider"] in ("", None)
    assert by_id[ids["rpm-429"]]["key_id"] == KEY_IDS[1]
    assert by_id[ids["rpm-429"]]["error"] == "rate_limit_exceeded"
    assert any(r["level"] == "warning" for r in records)  # the failed upstream attempt
    text = json_lines.getvalue()
    for needle in (*SECRETS, "PROMPT-TEXT", "churn", "user-q-1"):
        assert needle not in text, needle


async def test_unauthenticated_request_logged(make_gateway: Any,
                                              json_lines: io.StringIO) -> None:
    client = await make_gateway()
    r = await client.post("/v1/chat/completions", json=chat("chat/main", PROMPT),
                          headers=auth("sk-wrong-key-000"))
    assert r.status == 401
    access = [a for a in parsed(json_lines) if a["logger"] == "modelyard.access"]
    assert [a["status"] for a in access] == [401]
    assert access[0]["request_id"] == r.headers["x-request-id"]
    assert "sk-wrong-key-000" not in json_lines.getvalue()


def _record(**extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, "odd %s", ("extras",), None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize("fmt", [JsonFormatter(), TextFormatter()])
def test_formatters_take_any_extra(fmt: logging.Formatter) -> None:
    """A library's non-JSON extras (sets, paths, exceptions) still give one line."""
    try:
        raise ValueError("boom")
    except ValueError as exc:
        rec = _record(tags={"b", "a"}, path=Path("/tmp/x"), error=exc, big=2 ** 70)
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    line = fmt.format(rec)
    if isinstance(fmt, JsonFormatter):
        out = orjson.loads(line)
        assert out["msg"] == "odd extras" and out["level"] == "warning"
        assert out["path"] == "/tmp/x" and "boom" in out["error"] and "ValueError" in out["exc"]
        assert sorted(out["tags"]) == ["a", "b"] and out["big"] == str(2 ** 70)
    else:
        assert line.splitlines()[0].split(" ", 1)[1].startswith("WARNING gateway.x: odd extras")
