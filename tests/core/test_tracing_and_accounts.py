"""OpenTelemetry export (spans, GenAI attributes, traceparent upstream) and provider-account
limits (the account's own rpm: the gateway moves to another target instead of collecting 429s)."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.core.conftest import MakeGateway
from tests.core.support import KEY_ALL, auth, base_config, with_changes
from tests.fakes import FakeOpenAI

CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 20, "temperature": 0.5}


class Collector:
    """A fake OTLP/HTTP collector on 127.0.0.1: decodes every export into spans."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        self.arrived.set()
        return web.Response(body=b"", content_type="application/x-protobuf")


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = (v.string_value or v.int_value or v.double_value or v.bool_value
                       if not v.HasField("array_value") else
                       [x.string_value for x in v.array_value.values])
    return out


async def test_spans_exported_with_genai_attributes_and_traceparent_upstream(
        fake: FakeOpenAI, make_gateway: MakeGateway, aiohttp_server: Any) -> None:
    col = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", col.handle)
    server = await aiohttp_server(app)
    cfg = with_changes(base_config(fake.base_url),
                       otel={"endpoint": f"http://127.0.0.1:{server.port}"})
    client = await make_gateway(cfg)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.post("/v1/chat/completions", json=CHAT,
                          headers={**auth(KEY_ALL), "traceparent": parent})
    assert r.status == 200
    upstream_tp = fake.requests[0].headers["traceparent"]
    assert upstream_tp.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"  # same trace
    await client.close()  # shutting the app down flushes the batch processor
    await asyncio.wait_for(col.arrived.wait(), 10)
    by_kind = {s.kind: s for s in col.spans}
    server_span, client_span = by_kind[2], by_kind[3]  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    assert server_span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert server_span.parent_span_id.hex() == "b7ad6b7169203331"
    assert client_span.parent_span_id == server_span.span_id
    assert upstream_tp.split("-")[2] == client_span.span_id.hex()
    a = attrs(client_span)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.request.max_tokens"] == 20 and a["gen_ai.request.temperature"] == 0.5
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.response.finish_reasons"] == ["stop"]
    s = attrs(server_span)
    assert s["gen_ai.request.model"] == "openai/gpt-4o" and s["modelyard.provider"] == "fakeai"
    assert "hi there" not in str(col.spans)  # no prompt text in spans


async def test_provider_account_limit_moves_to_the_next_target(
        make_gateway: MakeGateway) -> None:
    async with FakeOpenAI() as one, FakeOpenAI() as two:
        cfg = base_config(one.base_url)
        cfg["providers"]["fakeai"]["limits"] = {"rpm": 2}
        cfg["providers"]["second"] = {"adapter": "openai", "base_url": two.base_url,
                                      "api_key": "k2"}
        cfg["routes"]["openai/gpt-4o"] = {"targets": [
            {"provider": "fakeai", "model": "a", "weight": 1000000},  # first choice, always
            {"provider": "second", "model": "b", "weight": 1}]}
        client = await make_gateway(cfg)
        providers = []
        for _ in range(5):
            r = await client.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_ALL))
            assert r.status == 200
            providers.append(r.headers["x-modelyard-provider"])
        # the account's own budget (2 per minute) is never exceeded: the rest went elsewhere
        assert len(one.requests) == 2 and len(two.requests) == 3
        assert providers == ["fakeai", "fakeai", "second", "second", "second"]
