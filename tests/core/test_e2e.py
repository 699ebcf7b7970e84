"""End to end through `create_app` against the fake OpenAI upstream on port 0."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import load_config
from tests.core.conftest import MakeGateway
from tests.core.support import KEY_A, KEY_ALL, auth
from tests.fakes import (FakeOpenAI, Reply, Stream, completion, embeddings_body, error_body,
                         text_stream, tool_call_stream)

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "hello"}]
WAIT = 5.0  # bound for every wait on an event (never reached when the gateway behaves)


def chat(model: str = "openai/gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


def sse_payloads(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert raw.endswith(b"\n\n"), raw[-60:]
    out = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        out.append(block[len("data: "):])
    return out


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# ----------------------------------------------------------------------------- non-streaming


async def test_completion(fake: FakeOpenAI, gw: Any) -> None:
    upstream = completion("Hi there!", model="gpt-4o-2024-08-06", usage=(12, 3))
    fake.push(Reply(200, upstream, headers={"x-request-id": "req_upstream"}))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(temperature=0.2))
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-modelyard-provider"] == "fakeai"
    rid = resp.headers["x-request-id"]
    assert rid and rid != "req_upstream"
    body = await resp.json()
    assert body == {**upstream, "model": "openai/gpt-4o"}  # only `model` differs
    [rec] = fake.requests
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.json == {"model": "gpt-4o-2024-08-06", "messages": HELLO, "temperature": 0.2}


async def test_response_model_is_the_id_the_client_sent(fake: FakeOpenAI, gw: Any) -> None:
    for sent, upstream_model in (("fast", "gpt-4o-2024-08-06"),
                                 ("openai/gpt-4o-mini", "gpt-4o-mini")):
        resp = await gw.post("/v1/chat/completions", headers=auth(KEY_A), json=chat(sent))
        assert resp.status == 200
        assert (await resp.json())["model"] == sent
        assert fake.last.json["model"] == upstream_model


async def test_request_id_echoes_the_clients_own(fake: FakeOpenAI, gw: Any) -> None:
    mine = {"x-request-id": "client-req-42"}
    resp = await gw.post("/v1/chat/completions", headers={**auth(KEY_ALL), **mine}, json=chat())
    assert resp.headers["x-request-id"] == "client-req-42"
    resp = await gw.post("/v1/chat/completions", headers=mine, json=chat())  # an error too
    assert resp.status == 401 and resp.headers["x-request-id"] == "client-req-42"
    resp = await gw.post("/v1/chat/completions", headers={**auth(KEY_ALL), **mine},
                         json=chat(stream=True))
    await resp.read()
    assert resp.headers["x-request-id"] == "client-req-42"
    a = await gw.get("/healthz")
    b = await gw.get("/healthz")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]


async def test_upstream_bad_request_is_a_400_with_the_providers_message(fake: FakeOpenAI,
                                                                        gw: Any) -> None:
    fake.push(Reply(400, error_body("Invalid value for 'logit_bias'.", param="logit_bias",
                                    code="invalid_value")))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat())
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert "Invalid value for 'logit_bias'." in err["message"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "logit_bias"
    assert len(fake.requests) == 1  # not retried: the same request fails everywhere


async def test_error_that_reached_an_upstream_names_the_provider(fake: FakeOpenAI,
                                                                 gw: Any) -> None:
    fake.push(Reply(400, error_body("Invalid value for 'logit_bias'.", param="logit_bias")),
              Reply(503, error_body("overloaded", "server_error")))
    for status in (400, 502):
        resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat())
        assert resp.status == status
        assert resp.headers.get("x-modelyard-provider") == "fakeai"


# ----------------------------------------------------------------------------- streaming


async def test_stream_strips_usage_the_client_did_not_ask_for(
        fake: FakeOpenAI, gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelyard.access")
    fake.push(Stream(text_stream(["Hel", "lo", "!"], usage=(19, 3))))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(stream=True))
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-modelyard-provider"] == "fakeai"
    assert resp.headers["x-request-id"]
    chunks = chunks_of(await resp.read())
    assert text_of(chunks) == "Hello!"
    assert len(chunks) == 5  # role, 3 pieces, finish: the usage chunk is gone
    assert all(c["choices"] and not c.get("usage") for c in chunks)
    assert all(c["model"] == "openai/gpt-4o" and c["object"] == "chat.completion.chunk"
               for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    sent = fake.last.json
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}  # asked for, though the client did not
    [line] = [r.access for r in caplog.records if r.name == "modelyard.access"]  # type: ignore[attr-defined]
    assert (line["prompt_tokens"], line["completion_tokens"]) == (19, 3)  # usage still captured
    assert line["stream"] is True and line["provider"] == "fakeai"


async def test_stream_keeps_usage_when_the_client_asked(fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Stream(text_stream(["Hi"], usage=(19, 1))))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(
        stream=True, stream_options={"include_usage": True}))
    chunks = chunks_of(await resp.read())
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 19
    assert chunks[-1]["usage"]["completion_tokens"] == 1
    assert chunks[-1]["model"] == "openai/gpt-4o"
    assert fake.last.json["stream_options"] == {"include_usage": True}


async def test_stream_include_usage_false_is_overridden_upstream_and_stripped(
        fake: FakeOpenAI, gw: Any) -> None:
    fake.push(Stream(text_stream(["Hi"], usage=(19, 1))))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(
        stream=True, stream_options={"include_usage": False, "include_obfuscation": False}))
    chunks = chunks_of(await resp.read())
    assert all(c["choices"] for c in chunks)
    assert fake.last.json["stream_options"] == {"include_usage": True,
                                                "include_obfuscation": False}


async def test_awkward_byte_splits_decode_identically(fake: FakeOpenAI, gw: Any) -> None:
    events = text_stream(["Ünï", "cødé ", "→ ✓", " 😀"], usage=(19, 4))
    tool = tool_call_stream("get_weather", ['{"ci', 'ty": "Edinb', 'urgh"}'])
    results = []
    for split in (None, range(1, 8), 1, 3):
        for evs in (events, tool):
            fake.push(Stream(evs, split=split))
            resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL),
                                 json=chat(stream=True, stream_options={"include_usage": True}))
            results.append((evs is tool, await resp.read()))
    plain = [raw for is_tool, raw in results if not is_tool]
    tools = [raw for is_tool, raw in results if is_tool]
    assert all(raw == plain[0] for raw in plain)
    assert all(raw == tools[0] for raw in tools)
    assert text_of(chunks_of(plain[0])) == "Ünïcødé → ✓ 😀"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks_of(tools[0]) if c["choices"] and
                   c["choices"][0]["delta"].get("tool_calls"))
    assert orjson.loads(args) == {"city": "Edinburgh"}


async def test_events_are_forwarded_as_they_arrive(fake: FakeOpenAI, gw: Any) -> None:
    release = asyncio.Event()
    fake.push(Stream(text_stream(["first", " second"]), pause={1: release}))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(stream=True))
    assert resp.status == 200
    # the fake holds everything after the role chunk until we have read that chunk
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), WAIT)
    assert orjson.loads(first[len(b"data: "):])["choices"][0]["delta"]["role"] == "assistant"
    assert not fake.last.finished.is_set()
    release.set()
    rest = await asyncio.wait_for(resp.read(), WAIT)
    chunks = chunks_of(first + rest)
    assert text_of(chunks) == "first second"


async def test_client_disconnect_closes_the_upstream_connection(fake: FakeOpenAI, gw: Any) -> None:
    never = asyncio.Event()
    fake.push(Stream(text_stream(["a", "b"]), pause={2: never}))
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL), json=chat(stream=True))
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), WAIT)
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), WAIT)
    rec = fake.last
    assert not rec.finished.is_set()
    resp.close()  # the client goes away mid-stream
    await asyncio.wait_for(rec.finished.wait(), WAIT)
    assert rec.outcome == "client_gone"
    assert not never.is_set()


async def test_client_leaving_before_the_answer_cancels_the_upstream_call(fake: FakeOpenAI,
                                                                         gw: Any) -> None:
    fake.push(Reply(hang=True))
    task = asyncio.ensure_future(gw.post("/v1/chat/completions", headers=auth(KEY_ALL),
                                         json=chat()))
    [rec] = await fake.wait_requests(1)
    task.cancel()  # the client gives up while the gateway waits for the upstream's headers
    await asyncio.wait_for(rec.finished.wait(), WAIT)
    assert rec.client_gone


async def test_stream_cut_after_first_byte_ends_with_an_error_event(fake: FakeOpenAI,
                                                                    gw: Any) -> None:
    for script in (Stream(text_stream(["a", "b"]), drop_after=2),
                   Stream(text_stream(["a", "b"]), done=False)):
        fake.push(script)
        resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL),
                             json=chat(stream=True))
        assert resp.status == 200
        payloads = sse_payloads(await asyncio.wait_for(resp.read(), WAIT))
        assert "[DONE]" not in payloads
        last = orjson.loads(payloads[-1])
        assert set(last) == {"error"} and set(last["error"]) >= {"message", "type", "code"}
        assert orjson.loads(payloads[0])["choices"][0]["delta"]["role"] == "assistant"


# ----------------------------------------------------------------------------- embeddings, mock


async def test_embeddings_are_routed_the_same_way(fake: FakeOpenAI, gw: Any) -> None:
    upstream = embeddings_body(["a", "b"], model="text-embedding-3-small")
    fake.push(Reply(200, upstream))
    resp = await gw.post("/v1/embeddings", headers=auth(KEY_A), json={
        "model": "openai/text-embedding-3-small", "input": ["a", "b"], "dimensions": 4})
    assert resp.status == 200
    assert resp.headers["x-modelyard-provider"] == "fakeai"
    assert resp.headers["x-request-id"]
    assert await resp.json() == {**upstream, "model": "openai/text-embedding-3-small"}
    rec = fake.last
    assert (rec.method, rec.path) == ("POST", "/v1/embeddings")
    assert rec.json == {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}
    assert rec.headers["authorization"].startswith("Bearer sk-upstream")


async def test_health_and_readiness(gw: Any) -> None:
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        resp = await gw.get(path)
        assert resp.status == 200
        assert (await resp.json()) == {"status": status}
        assert resp.headers["x-request-id"]


async def test_unknown_path_is_an_openai_shaped_404(gw: Any) -> None:
    resp = await gw.get("/v1/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_mock_provider_with_the_shipped_config(make_gateway: MakeGateway) -> None:
    client = await make_gateway(load_config(ROOT / "config" / "gateway.yaml", env={}))
    demo = auth("sk-modelyard-demo")
    resp = await client.post("/v1/chat/completions", headers=demo, json=chat(
        "mock/echo", messages=[{"role": "user", "content": "ping pong"}]))
    assert resp.status == 200
    assert resp.headers["x-modelyard-provider"] == "local"
    body = await resp.json()
    assert body["model"] == "mock/echo" and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "ping pong"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + \
        body["usage"]["completion_tokens"] > 0
    resp = await client.post("/v1/chat/completions", headers=demo, json={
        "messages": [{"role": "user", "content": "one two three"}], "stream": True})
    chunks = chunks_of(await resp.read())
    assert text_of(chunks) == "one two three"
    assert {c["model"] for c in chunks} == {"mock/echo"}  # the default model
    assert all(c["choices"] for c in chunks)  # usage stripped: not asked for
    resp = await client.post("/v1/chat/completions", headers=demo, json=chat("openai/gpt-4o"))
    assert resp.status == 403  # the demo key may use the mock models only
    resp = await client.get("/v1/models", headers=demo)
    assert [m["id"] for m in (await resp.json())["data"]] == ["mock/echo", "mock/gpt-4o-mini"]
