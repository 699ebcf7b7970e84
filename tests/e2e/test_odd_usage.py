"""Token counts a provider reports are taken as sane numbers: a count that is not a number, is
negative, fractional, or beyond 2**53 - 1 neither fails the request nor makes the usage record
one that a store cannot take (a 2**70 used to be counted half-way by the Redis script and then
skipped as already seen)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from adapters.anthropic.wire import usage_from as anthropic_usage
from adapters.gemini.wire import usage_from as gemini_usage
from gateway.accounting.jsonl import read_jsonl
from gateway.types import MAX_TOKENS, Usage, token_count
from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, MASTER, auth, say
from tests.fakes import FakeOpenAI, Reply, completion


@pytest.mark.parametrize("raw, count", [
    (12, 12), (0, 0), (None, 0), (-5, 0), (True, 0), (False, 0), (7.9, 7), ("42", 42), (" 8 ", 8),
    ("1e3", 1000), ("many", 0), ([1], 0), ({"n": 1}, 0), (2**70, MAX_TOKENS), (1e300, MAX_TOKENS),
    (math.inf, MAX_TOKENS), (-math.inf, 0), (math.nan, 0), ("nan", 0), ("-3", 0),
    (MAX_TOKENS, MAX_TOKENS),
])
def test_token_count(raw: Any, count: int) -> None:
    got = token_count(raw)
    assert got == count and type(got) is int


def test_each_adapter_reads_odd_counts_the_same_way() -> None:
    assert Usage.from_openai({"prompt_tokens": "lots", "completion_tokens": 2**70,
                              "prompt_tokens_details": "none",
                              "completion_tokens_details": {"reasoning_tokens": -1}}) == \
        Usage(0, MAX_TOKENS, 0, 0)
    assert Usage.from_openai(5) is None  # type: ignore[arg-type]  # a usage that is no object
    assert anthropic_usage({"input_tokens": MAX_TOKENS, "cache_read_input_tokens": 10,
                            "output_tokens": "x", "output_tokens_details": []}) == \
        Usage(MAX_TOKENS, 0, 10, 0)
    assert gemini_usage({"promptTokenCount": 1e400, "candidatesTokenCount": 3.5,
                         "thoughtsTokenCount": "2"}) == Usage(MAX_TOKENS, 5, 0, 2)


async def test_odd_counts_are_answered_and_recorded(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI, tmp_path: Path) -> None:
    """Through the gateway, in-process and with Redis: the client gets its answer, the record
    (JSON lines and the store behind /admin/usage) holds the clamped counts, and nothing is
    dropped."""
    jsonl = tmp_path / "usage.jsonl"
    gw = await make_gateway(mode_url, usage={"jsonl_path": str(jsonl)})
    odd = completion("Hello", model="m")
    odd["usage"] = {"prompt_tokens": 2**70, "completion_tokens": "seven", "total_tokens": None}
    fake.push(Reply(200, json.dumps(odd).encode()))  # stdlib json: orjson refuses 2**70
    fake.push(Reply(200, completion("Hello", model="m", usage=(3, 4))))
    first = await gw.post("/v1/chat/completions", json=say("hi", model="free/m"), headers=auth(KEY_FREE))
    assert first.status == 200, await first.text()
    assert (await first.json())["choices"][0]["message"]["content"] == "Hello"
    second = await gw.post("/v1/chat/completions", json=say("hi", model="free/m"), headers=auth(KEY_FREE))
    assert second.status == 200
    await settle(gw)
    recs = {r.request_id: r for r in read_jsonl(jsonl)}
    assert len(recs) == 2
    r1 = recs[first.headers["x-request-id"]]
    assert (r1.prompt_tokens, r1.completion_tokens, r1.status) == (MAX_TOKENS, 0, 200)
    r2 = recs[second.headers["x-request-id"]]
    assert (r2.prompt_tokens, r2.completion_tokens) == (3, 4)
    r = await gw.get("/admin/usage?group_by=model&model=free/m", headers=auth(MASTER))
    [row] = (await r.json())["data"]
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (2, MAX_TOKENS + 3, 4)
    assert gw.server.app  # the gateway is still serving
