"""The shared conformance cases through the OpenAI-compatible adapter: the client's body reaches
the upstream unchanged but for `model`, the usage request on streams and web search mapping."""
from __future__ import annotations

import copy

import pytest

from adapters.openai import ADAPTER, OpenAIStreamDecoder
from gateway.errors import UnsupportedParameter, UpstreamAuthError, UpstreamBadRequest, \
    UpstreamProtocolError, UpstreamRateLimited
from gateway.sse import replay
from gateway.types import ChatRequest, ProviderSpec, RawResponse, Target, loads
from tests.adapters.conformance import CASES

OPENAI = ProviderSpec(name="oa", adapter="openai", base_url="https://api.openai.com/v1",
                      api_key="sk-secret", headers={"OpenAI-Project": "p1"})
LUNOS = ProviderSpec(name="lunos", adapter="openai", base_url="https://api.lunos.tech/v1",
                     api_key="k")
GROQ = ProviderSpec(name="groq", adapter="openai", base_url="https://api.groq.com/openai/v1",
                    api_key="k", unsupported_params=frozenset({"logprobs"}),
                    options={"web_search": "none"})


def _req(case: dict) -> ChatRequest:
    body = {"model": "openai/gpt-4o", **copy.deepcopy(case)}
    return ChatRequest(body=body, model="openai/gpt-4o", stream=bool(body.get("stream")))


def _expected(name: str, case: dict) -> dict:
    body = {"model": "gpt-4o", **copy.deepcopy(case)}
    if name == "web_search":
        del body["tools"]
        body["web_search_options"] = {}
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_case_reaches_openai_unchanged_but_model(name: str) -> None:
    ureq = ADAPTER.build_request(_req(CASES[name]), Target(OPENAI, "gpt-4o"))
    assert ureq.url == "https://api.openai.com/v1/chat/completions"
    assert ureq.headers["authorization"] == "Bearer sk-secret"
    assert ureq.headers["OpenAI-Project"] == "p1"
    assert loads(ureq.body) == _expected(name, CASES[name])
    assert ureq.stream is bool(CASES[name].get("stream"))


def test_streams_always_ask_for_usage() -> None:
    req = ChatRequest(body={"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "stream": True, "stream_options": {"include_obfuscation": False}},
                      model="m", stream=True)
    body = loads(ADAPTER.build_request(req, Target(OPENAI, "gpt-4o")).body)
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert "include_usage" not in req.body["stream_options"]  # the client's body is untouched


def test_web_search_passes_through_to_vendors_that_take_it() -> None:
    body = loads(ADAPTER.build_request(_req(CASES["web_search"]), Target(LUNOS, "x")).body)
    assert body["tools"] == [{"type": "web_search"}]


def test_web_search_to_a_vendor_without_it_is_a_400_naming_it() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        ADAPTER.build_request(_req(CASES["web_search"]), Target(GROQ, "llama"))
    assert "groq" in info.value.message and info.value.param == "tools"
    body = loads(ADAPTER.build_request(_req(CASES["web_search"]),
                                       Target(GROQ, "llama", drop_unsupported=True)).body)
    assert "tools" not in body


def test_unsupported_params_rejected_or_dropped() -> None:
    req = _req({**CASES["basic"], "logprobs": True})
    with pytest.raises(UnsupportedParameter) as info:
        ADAPTER.build_request(req, Target(GROQ, "llama"))
    assert info.value.param == "logprobs" and "'groq'" in info.value.message
    body = loads(ADAPTER.build_request(req, Target(GROQ, "llama", drop_unsupported=True)).body)
    assert "logprobs" not in body and body["messages"] == CASES["basic"]["messages"]


def test_unknown_fields_pass_through() -> None:
    req = _req({**CASES["basic"], "reasoning_effort": "low", "x_vendor": {"a": 1}})
    body = loads(ADAPTER.build_request(req, Target(OPENAI, "o4-mini")).body)
    assert body["reasoning_effort"] == "low" and body["x_vendor"] == {"a": 1}


def test_errors_are_classified_with_the_provider_named() -> None:
    t = Target(OPENAI, "gpt-4o")
    e = ADAPTER.parse_error(RawResponse(429, {"retry-after": "7"}, b'{"error":{"message":"Rate'
                                        b' limit reached","type":"tokens","param":null,'
                                        b'"code":"rate_limit_exceeded"}}'), t)
    assert isinstance(e, UpstreamRateLimited) and e.retry_after_s == 7.0 and "'oa'" in e.message
    e = ADAPTER.parse_error(RawResponse(401, {}, b'{"error":{"message":"Incorrect API key",'
                                        b'"type":"invalid_request_error","code":"invalid_api_key"}}'), t)
    assert isinstance(e, UpstreamAuthError) and e.status == 502
    e = ADAPTER.parse_error(RawResponse(422, {}, b'{"object":"error","message":{"detail":[]},'
                                        b'"type":"invalid_request_error"}'), t)
    assert isinstance(e, UpstreamBadRequest) and e.status == 400


TOOL_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1"'
    b',"type":"function","function":{"name":"GetWeather","arguments":""}}]},"finish_reason":null}]}'
    b'\n\n: keep-alive\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
    b'[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":1}"}}]},'
    b'"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":'
    b'[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],'
    b'"usage":{"prompt_tokens":76,"completion_tokens":24,"total_tokens":100}}\n\n'
    b'data: [DONE]\n\n')


def _decode(raw: bytes, split: int) -> list:
    dec = OpenAIStreamDecoder(Target(OPENAI, "gpt-4o"))
    out = []
    for ev in replay(raw, split):
        out += [(e.chunk, e.usage, e.usage_only) for e in dec.feed(ev)]
    dec.close()
    return out


def test_stream_decodes_identically_at_every_byte_split() -> None:
    whole = _decode(TOOL_STREAM, len(TOOL_STREAM))
    assert len(whole) == 4 and whole[-1][2] is True and whole[-1][1].total_tokens == 100
    for split in range(1, 40):
        assert _decode(TOOL_STREAM, split) == whole


def test_stream_without_done_is_a_protocol_error() -> None:
    cut = TOOL_STREAM[: TOOL_STREAM.index(b"data: [DONE]")]
    with pytest.raises(UpstreamProtocolError):
        _decode(cut, 7)


def test_passthrough_fast_path_only_changes_the_model() -> None:
    from gateway.streaming import ChunkEncoder

    dec = OpenAIStreamDecoder(Target(OPENAI, "gpt-4o"))
    enc = ChunkEncoder("openai/gpt-4o", "r1", include_usage=False)
    frames, raws = [], 0
    for ev in replay(TOOL_STREAM, 5):
        for e in dec.feed(ev):
            raws += e.raw is not None
            frame = enc.encode(e)
            if frame is not None:
                frames.append(loads(frame[len(b"data: "):]))
    dec.close()
    upstream = [loads(ev.data) for ev in replay(TOOL_STREAM, 5) if ev.data.startswith("{")]
    assert raws == 1  # the second chunk went by the fast path (the first teaches the model text)
    assert len(frames) == 3  # the usage chunk is stripped: the client did not ask for it
    for got, sent in zip(frames, upstream):
        assert got == {**sent, "model": "openai/gpt-4o"}
