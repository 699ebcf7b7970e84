"""Every shared conformance case through the Azure OpenAI adapter (classic deployment URLs and
the v1 path): the exact upstream request, and Azure-shaped answers translated."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from adapters.azure import ADAPTER
from gateway.errors import UnsupportedParameter
from gateway.types import ChatRequest, ProviderSpec, RawResponse, Target, dumps, loads
from tests.adapters.conformance import CASES

KEY = "azure-secret-key"
RESOURCE = "https://contoso.openai.azure.com"
DEPLOYMENT = "gpt-4o-prod"


def target(api_version: str = "2024-10-21", *, drop: bool = False, base: str = RESOURCE,
           **options: Any) -> Target:
    spec = ProviderSpec(name="azure-eu", adapter="azure", base_url=base, api_key=KEY,
                        api_version=api_version, options=options)
    return Target(provider=spec, model=DEPLOYMENT, drop_unsupported=drop)


def chat(body: dict[str, Any]) -> ChatRequest:
    return ChatRequest(body={"model": "openai/gpt-4o", **copy.deepcopy(body)},
                       model="openai/gpt-4o", stream=bool(body.get("stream")))


def expected_body(name: str) -> dict[str, Any]:
    """Azure takes the OpenAI body itself: only `model` becomes the deployment name."""
    body = {**copy.deepcopy(CASES[name]), "model": DEPLOYMENT}
    return body


CLASSIC = f"{RESOURCE}/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
V1 = f"{RESOURCE}/openai/v1/chat/completions"
FLAVOURS = {"classic": (target(), CLASSIC), "v1": (target("v1"), V1),
            "v1_option": (target("", api="v1"), V1),
            "v1_base": (target("", base=f"{RESOURCE}/openai/v1/"), V1)}
NO_SEARCH = sorted(n for n in CASES if n != "web_search")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("name", NO_SEARCH)
def test_exact_upstream_request(name: str, flavour: str) -> None:
    tgt, url = FLAVOURS[flavour]
    up = ADAPTER.build_request(chat(CASES[name]), tgt)
    assert (up.method, up.url, up.stream) == ("POST", url, bool(CASES[name].get("stream")))
    assert up.headers == {"content-type": "application/json", "api-key": KEY}
    assert KEY not in up.url
    assert loads(up.body or b"") == expected_body(name)


def test_every_case_is_covered() -> None:
    assert set(NO_SEARCH) | {"web_search"} == set(CASES)


def test_web_search_case_is_a_clear_400_or_dropped() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        ADAPTER.build_request(chat(CASES["web_search"]), target())
    assert info.value.status == 400 and info.value.param == "tools"
    assert "azure-eu" in info.value.message and "web search" in info.value.message
    up = ADAPTER.build_request(chat(CASES["web_search"]), target(drop=True))
    assert loads(up.body or b"") == {"model": DEPLOYMENT,
                                     "messages": CASES["web_search"]["messages"]}


def test_stream_always_asks_for_usage() -> None:
    up = ADAPTER.build_request(chat({"messages": [{"role": "user", "content": "x"}],
                                     "stream": True}), target())
    assert loads(up.body or b"")["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------- translated responses

FILTERS = {"hate": {"filtered": False, "severity": "safe"},
           "violence": {"filtered": False, "severity": "safe"}}


def azure_answer(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {"id": "chatcmpl-AZ9", "object": "chat.completion", "created": 1732000000,
            "model": "gpt-4o-2024-08-06",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "content_filter_results": FILTERS,
                         "message": {"role": "assistant", **message}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}


CALL = {"id": "call_abc", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
ANSWERS = {
    "tools_auto": ({"content": None, "tool_calls": [CALL]}, "tool_calls"),
    "tools_required": ({"content": None, "tool_calls": [CALL]}, "tool_calls"),
    "tools_named": ({"content": None, "tool_calls": [CALL]}, "tool_calls"),
    "json_schema": ({"content": '{"location":"Tokyo","temperature":21}'}, "stop"),
    "json_object": ({"content": '{"ok":true}'}, "stop"),
    "system_and_sampling": ({"content": "Hi"}, "length"),
    "image_https_url": ({"content": None}, "content_filter"),
}


@pytest.mark.parametrize("name", NO_SEARCH)
def test_translated_response_keeps_every_field(name: str) -> None:
    message, finish = ANSWERS.get(name, ({"content": "Hello!"}, "stop"))
    body = azure_answer(message, finish)
    resp = ADAPTER.parse_response(RawResponse(200, {}, dumps(body)), chat(CASES[name]), target())
    assert resp.body == body  # content_filter_results, prompt_filter_results: nothing lost
    assert resp.body["choices"][0]["finish_reason"] == finish
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.cached_tokens) == \
        (20, 8, 4)
