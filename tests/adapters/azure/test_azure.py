"""Azure OpenAI specifics: recorded streams (PROVIDERS.md §4.3/§7.4) at every byte split, error
bodies, embeddings URLs, auth header choices."""
from __future__ import annotations

from pathlib import Path

import pytest

from adapters.azure import ADAPTER
from gateway import errors as E
from gateway.sse import replay
from gateway.types import (
    JSON,
    EmbeddingsRequest,
    ProviderSpec,
    RawResponse,
    StreamEvent,
    Target,
    dumps,
    loads,
)
from tests.adapters.azure.test_conformance import (
    DEPLOYMENT,
    KEY,
    RESOURCE,
    chat,
    target,
)

DATA = Path(__file__).parent / "data"
REQ = chat({"messages": [{"role": "user", "content": "Hi"}], "stream": True})


def decode(raw: bytes, split: int) -> list[StreamEvent]:
    decoder = ADAPTER.stream_decoder(REQ, target())
    events = [e for sse in replay(raw, split) for e in decoder.feed(sse)]
    return events + decoder.close()


def view(events: list[StreamEvent]) -> list[tuple[JSON, bool]]:
    return [(e.as_chunk(), e.usage_only) for e in events]


def test_prompt_filter_preamble_does_not_break_the_stream_at_any_split() -> None:
    raw = (DATA / "stream_with_prompt_filter.sse").read_bytes()
    reference = decode(raw, len(raw))
    assert all(e.as_chunk()["choices"] or e.usage_only for e in reference)  # preamble skipped
    text = "".join(e.as_chunk()["choices"][0]["delta"].get("content") or ""
                   for e in reference if e.as_chunk()["choices"])
    assert text == "Hello there!"
    assert reference[0].as_chunk()["choices"][0]["delta"]["role"] == "assistant"
    assert [e.as_chunk()["choices"][0]["finish_reason"] for e in reference if e.as_chunk()["choices"]][-1] \
        == "stop"
    last = reference[-1]
    assert last.usage_only and last.usage is not None and last.usage.total_tokens == 12
    for split in range(1, len(raw)):
        assert view(decode(raw, split)) == view(reference), split


def test_content_filter_stream_at_any_split() -> None:
    raw = (DATA / "stream_content_filter.sse").read_bytes()
    reference = decode(raw, len(raw))
    finish = [e.as_chunk()["choices"][0] for e in reference if e.as_chunk()["choices"]][-1]
    assert finish["finish_reason"] == "content_filter"
    assert finish["content_filter_results"]["violence"]["filtered"] is True
    for split in range(1, len(raw)):
        assert view(decode(raw, split)) == view(reference), split


def test_stream_cut_before_done_raises() -> None:
    raw = (DATA / "stream_with_prompt_filter.sse").read_bytes()
    cut = raw[:raw.index(b"data: [DONE]")]
    with pytest.raises(E.UpstreamProtocolError):
        decode(cut, 11)


# ---------------------------------------------------------------- errors


def err(body: JSON | bytes, status: int, headers: dict[str, str] | None = None) -> E.UpstreamError:
    data = body if isinstance(body, bytes) else dumps(body)
    return ADAPTER.parse_error(RawResponse(status, headers or {}, data), target())


def test_azure_429_with_string_code_and_retry_after() -> None:
    e = err({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create "
                       "Operation ... Please retry after 6 seconds."}}, 429,
            {"Retry-After": "6", "x-ratelimit-remaining-requests": "0"})
    assert isinstance(e, E.UpstreamRateLimited) and e.retryable and e.retry_after_s == 6.0
    assert e.message.startswith("azure (provider 'azure-eu') answered 429: Requests to")
    e = err({"error": {"code": "429", "message": "slow"}}, 429, {"retry-after-ms": "1500"})
    assert e.retry_after_s == 1.5


def test_prompt_content_filter_400() -> None:
    body = {"error": {"message": "The response was filtered due to the prompt triggering Azure "
                      "OpenAI's content management policy.", "type": None, "param": "prompt",
                      "code": "content_filter", "status": 400, "innererror": {
                          "code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                              "hate": {"filtered": False, "severity": "safe"},
                              "violence": {"filtered": True, "severity": "medium"},
                              "jailbreak": {"filtered": True, "detected": True}}}}}
    e = err(body, 400)
    assert isinstance(e, E.UpstreamContentFiltered)
    assert (e.status, e.code, e.retryable, e.failover) == (400, "content_filter", False, False)
    assert e.message.endswith("(filtered: violence (medium), jailbreak)")
    assert "answered 400 content_filter:" in e.message and e.param == "prompt"


@pytest.mark.parametrize("status,body,cls", [
    (401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key "
                     "or wrong API endpoint."}}, E.UpstreamAuthError),
    (404, {"error": {"code": "DeploymentNotFound", "message": "The API deployment for this "
                     "resource does not exist."}}, E.UpstreamNotFound),
    (400, {"error": {"code": "context_length_exceeded", "message": "This model's maximum "
                     "context length is 128000 tokens.", "param": "messages"}},
     E.ContextWindowExceeded),
    (500, {"error": {"code": "InternalServerError", "message": "Backend error"}},
     E.UpstreamUnavailable),
    (503, b"<html>Service Unavailable</html>", E.UpstreamUnavailable),
])
def test_other_errors(status: int, body: JSON | bytes, cls: type) -> None:
    e = err(body, status)
    assert type(e) is cls and e.upstream_status == status and e.provider == "azure-eu"
    assert KEY not in e.message


# ---------------------------------------------------------------- embeddings and auth


def emb() -> EmbeddingsRequest:
    return EmbeddingsRequest(body={"model": "azure/emb", "input": ["a", "b"], "dimensions": 256},
                             model="azure/emb")


def test_embeddings_classic_and_v1() -> None:
    up = ADAPTER.build_embeddings_request(emb(), target("2024-06-01"))
    assert up.url == (f"{RESOURCE}/openai/deployments/{DEPLOYMENT}/embeddings"
                      "?api-version=2024-06-01")
    assert up.headers["api-key"] == KEY
    assert loads(up.body or b"") == {"model": DEPLOYMENT, "input": ["a", "b"], "dimensions": 256}
    assert ADAPTER.build_embeddings_request(emb(), target("v1")).url == \
        f"{RESOURCE}/openai/v1/embeddings"
    answer = {"object": "list", "model": "text-embedding-3-small",
              "data": [{"object": "embedding", "index": 0, "embedding": [0.1]},
                       {"object": "embedding", "index": 1, "embedding": [0.2]}],
              "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    resp = ADAPTER.parse_embeddings_response(RawResponse(200, {}, dumps(answer)), emb(), target())
    assert resp.body == answer and resp.usage is not None and resp.usage.prompt_tokens == 2


def test_default_api_version_entra_token_and_odd_deployment_names() -> None:
    spec = ProviderSpec(name="az", adapter="azure", base_url=RESOURCE + "/openai/",
                        api_key="tok", auth_header="authorization", headers={"x-ms-test": "1"})
    up = ADAPTER.build_request(chat({"messages": [{"role": "user", "content": "x"}]}),
                               Target(provider=spec, model="my dep/1"))
    assert up.url == (f"{RESOURCE}/openai/deployments/my%20dep%2F1/chat/completions"
                      "?api-version=2024-10-21")
    assert up.headers == {"content-type": "application/json", "authorization": "Bearer tok",
                          "x-ms-test": "1"}


def test_configured_unsupported_params_follow_the_policy() -> None:
    spec = ProviderSpec(name="az", adapter="azure", base_url=RESOURCE, api_key="k",
                        unsupported_params=frozenset({"logit_bias"}))
    with pytest.raises(E.UnsupportedParameter, match="'logit_bias'"):
        ADAPTER.build_request(chat({"messages": [{"role": "user", "content": "x"}],
                                    "logit_bias": {"1": 1}}), Target(provider=spec, model="d"))
