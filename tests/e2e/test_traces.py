"""Traces through the gateway: `"observability": true` or `x-modelyard-trace: 1`, read back at
GET /v1/traces/{x-request-id} by the same key only; the field never goes upstream."""
from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, KEY_T1, auth, say
from tests.fakes import FakeOpenAI, Reply, error_body


async def get_trace(gw: TestClient[Any, Any], rid: str, key: str) -> tuple[int, Any]:
    r = await gw.get(f"/v1/traces/{rid}", headers=auth(key))
    return r.status, await r.json()


async def test_trace_by_body_field(mode_url: str, make_gateway: MakeGateway,
                                   fake: FakeOpenAI) -> None:
    gw = await make_gateway(mode_url)
    fake.push(Reply(500, error_body("boom", "server_error")))  # one retry, seen in the trace
    r = await gw.post("/v1/chat/completions", json=say("usage 21 8", observability=True),
                      headers=auth(KEY_FREE))
    assert r.status == 200
    rid = r.headers["x-request-id"]
    for sent in fake.requests:
        assert "observability" not in sent.json  # never sent upstream
    await settle(gw)
    status, trace = await get_trace(gw, rid, KEY_FREE)
    assert status == 200, trace
    assert trace["request_id"] == rid and trace["model"] == "priced/m" and trace["status"] == 200
    attempts = trace["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("up", 500), ("up", 200)]
    assert all(isinstance(a["duration_ms"], (int, float)) and a["duration_ms"] >= 0
               for a in attempts)
    assert attempts[0].get("error")
    assert trace["usage"]["prompt_tokens"] == 21 and trace["usage"]["completion_tokens"] == 8
    status, err = await get_trace(gw, rid, KEY_T1)  # another key cannot read it
    assert status == 404 and err["error"]["code"]


async def test_trace_by_header_and_stream(mode_url: str, make_gateway: MakeGateway,
                                          fake: FakeOpenAI) -> None:
    gw = await make_gateway(mode_url)
    r = await gw.post("/v1/chat/completions", json=say("usage 5 6", stream=True),
                      headers={**auth(KEY_T1), "x-modelyard-trace": "1",
                               "x-request-id": "client-trace-1"})
    assert r.status == 200 and (await r.text()).endswith("data: [DONE]\n\n")
    assert r.headers["x-request-id"] == "client-trace-1"
    await settle(gw)
    status, trace = await get_trace(gw, "client-trace-1", KEY_T1)
    assert status == 200, trace
    assert [(a["provider"], a["status"]) for a in trace["attempts"]] == [("up", 200)]
    assert trace["usage"]["total_tokens"] == 11 and trace["stream"] is True
    assert (await get_trace(gw, "client-trace-1", KEY_FREE))[0] == 404
    # an untraced request keeps no trace
    r = await gw.post("/v1/chat/completions", json=say("hi"), headers=auth(KEY_T1))
    assert (await get_trace(gw, r.headers["x-request-id"], KEY_T1))[0] == 404
