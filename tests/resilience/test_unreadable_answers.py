"""An upstream answer of a shape the adapter does not expect (a 200 whose `content` is a number,
an error body that is a list, a stream event of the wrong type) is the provider's fault: a 502
`upstream_protocol_error` naming the provider, and a reason to fall back; never a 500."""
from __future__ import annotations

from typing import Any

import pytest
import yaml
from aiohttp import web

from gateway.app import create_app
from gateway.config import parse_config
from gateway.types import dumps

KEY = "sk-unreadable-test-1234"
CALLS = web.AppKey("calls", dict)

ODD_MESSAGES: list[tuple[int, Any]] = [
    (200, {"id": "msg_1", "type": "message", "role": "assistant", "content": 5,
           "model": "claude-x", "stop_reason": "end_turn", "usage": {"input_tokens": 1}}),
    (200, {"id": "msg_1", "type": "message", "role": "assistant", "content": [7],
           "model": "claude-x", "stop_reason": "end_turn", "usage": {"input_tokens": 1}}),
    (529, ["overloaded"]),
]
ODD_STREAM = (b'event: message_start\ndata: {"type": "message_start", "message": 3}\n\n'
              b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": "a",'
              b' "delta": 4}\n\n')


def make_upstream(answers: list[tuple[int, Any]], stream: bytes = b"") -> web.Application:
    """A fake Anthropic provider answering each POST /v1/messages with the next of `answers`
    (or `stream` as SSE when the request streams), and a healthy OpenAI-compatible one."""
    calls = {"anthropic": 0, "openai": 0}

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        calls["anthropic"] += 1
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(stream)
            await resp.write_eof()
            return resp
        status, payload = answers[(calls["anthropic"] - 1) % len(answers)]
        return web.Response(status=status, body=dumps(payload), content_type="application/json")

    async def completions(request: web.Request) -> web.Response:
        calls["openai"] += 1
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/chat/completions", completions)
    app[CALLS] = calls
    return app


def config(base: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"id": "t", "key": KEY}]},
        "providers": {"claude": {"adapter": "anthropic", "base_url": base, "api_key": "sk-a"},
                      "gpt": {"adapter": "openai", "base_url": base + "/v1", "api_key": "sk-o"}},
        "routes": {"odd/only": {"targets": [{"provider": "claude", "model": "claude-x"}]},
                   "odd/fallback": {"targets": [{"provider": "claude", "model": "claude-x"}],
                                    "fallbacks": ["good/m"]},
                   "good/m": {"targets": [{"provider": "gpt", "model": "gpt-x"}]}},
        "retries": {"attempts": 3, "backoff_s": 0},  # an unreadable answer is not retried
    }


async def gateway(aiohttp_client: Any, aiohttp_server: Any, stream: bytes = b"",
                  answers: list[tuple[int, Any]] | None = None) -> tuple[Any, dict[str, int]]:
    upstream = make_upstream(answers or ODD_MESSAGES, stream)
    server = await aiohttp_server(upstream)
    cfg = config(str(server.make_url("")).rstrip("/"))
    client = await aiohttp_client(create_app(parse_config(yaml.safe_dump(cfg), env={})))
    return client, upstream[CALLS]


@pytest.mark.parametrize("answer", ODD_MESSAGES, ids=["content-number", "block-number", "error-list"])
async def test_an_odd_answer_is_a_502_naming_the_provider(
        aiohttp_client: Any, aiohttp_server: Any, answer: tuple[int, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    client, calls = await gateway(aiohttp_client, aiohttp_server, answers=[answer])
    r = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "odd/only", "messages": [{"role": "user", "content": "hi"}]})
    body = await r.json()
    assert r.status == 502, body
    err = body["error"]
    assert err["code"] == "all_targets_failed"
    assert f"claude: {answer[0]}" in err["message"]
    assert r.headers["x-modelyard-provider"] == "claude"
    unread = [rec for rec in caplog.records if "could not read an answer" in rec.getMessage()]
    if answer is ODD_MESSAGES[1]:  # the adapter tripped over it: not sent again, traceback logged
        assert calls == {"anthropic": 1, "openai": 0}
        assert len(unread) == 1 and unread[0].exc_info is not None
    else:  # the adapter's own protocol error, or an overloaded provider's odd body: retried
        assert calls == {"anthropic": 3, "openai": 0}
        assert unread == []


async def test_an_odd_answer_falls_back(aiohttp_client: Any, aiohttp_server: Any) -> None:
    client, calls = await gateway(aiohttp_client, aiohttp_server, answers=[ODD_MESSAGES[1]])
    r = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "odd/fallback",
                                "messages": [{"role": "user", "content": "hi"}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["choices"][0]["message"]["content"] == "fine"
    assert r.headers["x-modelyard-fallback"] == "good/m"
    assert calls == {"anthropic": 1, "openai": 1}


async def test_an_odd_stream_start_is_a_502_before_any_byte(
        aiohttp_client: Any, aiohttp_server: Any) -> None:
    client, calls = await gateway(aiohttp_client, aiohttp_server, stream=ODD_STREAM)
    r = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "odd/only", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]})
    body = await r.json()
    assert r.status == 502, body
    assert body["error"]["code"] == "all_targets_failed"
    assert "claude" in body["error"]["message"], body
    assert calls["anthropic"] == 1
