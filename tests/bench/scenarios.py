"""The benchmark's scenarios and the exact request each kind of target receives.

Direct and the bare passthrough get the upstream's native request (an OpenAI body at
/v1/chat/completions, or an Anthropic body at /v1/messages); the gateways (Modelyard, LiteLLM)
get the OpenAI-compatible request with a model routed to the matching upstream flavor.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.types import dumps

# ~25 words: the mocks echo the prompt one word per chunk, so a stream has 25+ content chunks.
PROMPT = ("Please summarise the following notes about the quarterly planning meeting for the "
          "platform team, keeping every decision, every owner and every deadline in one short list")
LARGE_BYTES = 100_000
MAX_TOKENS = 64
UPSTREAM_KEY = "sk-bench-upstream"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
ROUTE_OPENAI = "bench/gpt-4o-mini"  # gateway-side model names (routes in the configs)
ROUTE_ANTHROPIC = "bench/claude-haiku"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    concurrency: int
    stream: bool = False
    anthropic: bool = False  # the upstream speaks Anthropic Messages (gateways translate)
    large: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ns_c1", "non-streaming, concurrency 1", 1),
    Scenario("ns_c16", "non-streaming, concurrency 16", 16),
    Scenario("ns_c64", "non-streaming, concurrency 64", 64),
    Scenario("stream_openai_c16", "streaming via the OpenAI-compatible adapter, c=16", 16,
             stream=True),
    Scenario("stream_anthropic_c16", "streaming via the Anthropic translation, c=16", 16,
             stream=True, anthropic=True),
    Scenario("large_c16", f"large prompt ({LARGE_BYTES // 1000} kB body), non-streaming, c=16", 16,
             large=True),
)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


def prompt_for(sc: Scenario) -> str:
    if not sc.large:
        return PROMPT
    reps = LARGE_BYTES // (len(PROMPT) + 1) + 1
    return " ".join([PROMPT] * reps)[:LARGE_BYTES]


def request_for(sc: Scenario, native: bool, gateway_key: str) -> Request:
    """`native`: the upstream's own format (direct, passthrough); else the gateway's, sent
    with `gateway_key` (Modelyard's static key, which is also LiteLLM's master key)."""
    messages = [{"role": "user", "content": prompt_for(sc)}]
    if native and sc.anthropic:
        body = {"model": ANTHROPIC_MODEL, "max_tokens": MAX_TOKENS, "messages": messages,
                "stream": sc.stream}
        headers = {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}
        return Request("/v1/messages", headers, dumps(body))
    model = (ANTHROPIC_MODEL if sc.anthropic else OPENAI_MODEL) if native else \
        (ROUTE_ANTHROPIC if sc.anthropic else ROUTE_OPENAI)
    body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": sc.stream}
    key = UPSTREAM_KEY if native else gateway_key
    return Request("/v1/chat/completions", {"Authorization": f"Bearer {key}"}, dumps(body))
