"""/metrics after scripted traffic: exact counter deltas and label sets (issue 7, item 1)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import FakeOpenAI, Reply, completion, error_body
from tests.observability.support import (KEY_ALPHA, KEY_NOTEAM, KEY_SLOW, KEY_STRAY, MASTER,
                                         PRICE_BACKUP, PRICE_MAIN, Samples, auth, changed, chat,
                                         lbl, parse)

R = "modelyard_requests_total"
TOK = "modelyard_tokens_total"
COST = "modelyard_cost_usd_total"


async def scrape(client: Any) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(await resp.text())


def fail500() -> Reply:
    return Reply(500, error_body("upstream broke", "server_error"))


async def post(client: Any, key: str, body: dict[str, Any]) -> Any:
    return await client.post("/v1/chat/completions", json=body, headers=auth(key))


async def traffic(client: Any, one: FakeOpenAI, two: FakeOpenAI) -> None:
    """Successes, a retry, a fallback, a 502, a gateway rate limit, a 404 and a stream."""
    one.push(Reply(200, completion("a", usage=(100, 20))), Reply(200, completion("b", usage=(100, 20))))
    for _ in range(2):
        assert (await post(client, KEY_ALPHA, chat("chat/main"))).status == 200
    one.push(fail500(), Reply(200, completion("c", usage=(10, 5))))  # one retry, then success
    resp = await post(client, KEY_ALPHA, chat("chat/main"))
    assert resp.status == 200 and resp.headers["x-modelyard-provider"] == "up1"
    one.push(fail500(), fail500())  # both attempts fail: the fallback route answers
    two.push(Reply(200, completion("d", usage=(7, 3))))
    resp = await post(client, KEY_ALPHA, chat("chat/main"))
    assert resp.status == 200 and resp.headers["x-modelyard-fallback"] == "chat/backup"
    one.push(fail500(), fail500())  # no fallback: 502
    assert (await post(client, KEY_ALPHA, chat("chat/solo"))).status == 502
    # rpm 1: the first passes (auto answer: 19 prompt + 10 completion tokens), the second 429s
    assert (await post(client, KEY_SLOW, chat("chat/main"))).status == 200
    resp = await post(client, KEY_SLOW, chat("chat/main"))
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    assert (await post(client, KEY_ALPHA, chat("nope/unknown"))).status == 404
    body = chat("chat/main", stream=True, stream_options={"include_usage": True})
    resp = await post(client, KEY_STRAY, body)  # auto stream: usage 19 + 2
    assert resp.status == 200 and (await resp.read()).endswith(b"data: [DONE]\n\n")
    assert (await post(client, KEY_NOTEAM, chat("chat/backup"))).status == 200  # 19 + 10


async def test_counter_deltas_and_label_sets(make_gateway: Any,
                                             fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    one, two = fakes
    client = await make_gateway()
    before = await scrape(client)
    await traffic(client, one, two)
    after = await scrape(client)

    assert changed(before, after, R) == {
        lbl(model="chat/main", provider="up1", status="200"): 5,  # 2 + retry + rpm-1 + stream
        lbl(model="chat/backup", provider="up2", status="200"): 2,  # fallback + direct
        lbl(model="chat/solo", provider="up1", status="502"): 1,  # reached an upstream
        lbl(model="chat/main", provider="none", status="429"): 1,
        lbl(model="none", provider="none", status="404"): 1,
    }
    assert changed(before, after, TOK) == {
        lbl(model="chat/main", provider="up1", team="alpha", type="prompt"): 100 + 100 + 10 + 19,
        lbl(model="chat/main", provider="up1", team="alpha", type="completion"): 20 + 20 + 5 + 10,
        lbl(model="chat/main", provider="up1", team="other", type="prompt"): 19,
        lbl(model="chat/main", provider="up1", team="other", type="completion"): 2,
        lbl(model="chat/backup", provider="up2", team="alpha", type="prompt"): 7,
        lbl(model="chat/backup", provider="up2", team="alpha", type="completion"): 3,
        lbl(model="chat/backup", provider="up2", team="none", type="prompt"): 19,
        lbl(model="chat/backup", provider="up2", team="none", type="completion"): 10,
    }
    cost = changed(before, after, COST)
    assert set(cost) == {lbl(model="chat/main", team="alpha"), lbl(model="chat/main", team="other"),
                         lbl(model="chat/backup", team="alpha"),
                         lbl(model="chat/backup", team="none")}

    def usd(price: tuple[float, float], prompt: int, completion: int) -> float:
        return (prompt * price[0] + completion * price[1]) / 1e6

    assert cost[lbl(model="chat/main", team="alpha")] == pytest.approx(usd(PRICE_MAIN, 229, 55))
    assert cost[lbl(model="chat/main", team="other")] == pytest.approx(usd(PRICE_MAIN, 19, 2))
    # (the fallback's cost, priced by the route that answered: test_fallback_priced_...)
    assert cost[lbl(model="chat/backup", team="none")] == pytest.approx(usd(PRICE_BACKUP, 19, 10))

    assert changed(before, after, "modelyard_rate_limited_total") == {
        lbl(scope="key", team="alpha"): 1}
    assert changed(before, after, "modelyard_retries_total") == {
        lbl(provider="up1", reason="500"): 3}  # the retry, the fallback's, the 502's
    assert changed(before, after, "modelyard_upstream_errors_total") == {
        lbl(provider="up1", status="500"): 5}
    assert changed(before, after, "modelyard_fallbacks_total") == {
        lbl(from_model="chat/main", to_model="chat/backup"): 1}

    # histograms: duration for every request that reached an upstream (the 502 too); time to
    # first token and overhead for those that got an answer
    assert changed(before, after, "modelyard_request_duration_seconds_count") == {
        lbl(model="chat/main", provider="up1"): 5, lbl(model="chat/backup", provider="up2"): 2,
        lbl(model="chat/solo", provider="up1"): 1}
    assert changed(before, after, "modelyard_time_to_first_token_seconds_count") == {
        lbl(model="chat/main", provider="up1"): 5, lbl(model="chat/backup", provider="up2"): 2}
    overhead = changed(before, after, "modelyard_overhead_seconds_count")
    assert overhead == {lbl(model="chat/main"): 5, lbl(model="chat/backup"): 2}
    le = changed(before, after, "modelyard_request_duration_seconds_bucket")
    assert le[lbl(model="chat/main", provider="up1", le="+Inf")] == 5
    assert le[lbl(model="chat/main", provider="up1", le="600.0")] == 5  # buckets up to minutes


async def test_fallback_priced_by_answering_route(make_gateway: Any,
                                                  fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    """The fallback route answered: its price applies (and its model label)."""
    one, two = fakes
    client = await make_gateway()
    before = await scrape(client)
    one.push(fail500(), fail500())
    two.push(Reply(200, completion("d", usage=(7, 3))))
    resp = await post(client, KEY_ALPHA, chat("chat/main"))
    assert resp.headers["x-modelyard-fallback"] == "chat/backup"
    after = await scrape(client)
    assert changed(before, after, COST) == {
        lbl(model="chat/backup", team="alpha"): pytest.approx((7 * PRICE_BACKUP[0]
                                                               + 3 * PRICE_BACKUP[1]) / 1e6)}


async def test_failed_upstream_request_counts_with_its_provider(
        make_gateway: Any, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    """A 502 after upstream attempts is that provider's failure (the error-ratio alerts select
    `requests_total{provider!="none", status=~"5.."}`); only requests refused before any
    upstream count with provider="none"."""
    one, _ = fakes
    client = await make_gateway()
    before = await scrape(client)
    one.push(fail500(), fail500())
    assert (await post(client, KEY_ALPHA, chat("chat/solo"))).status == 502
    after = await scrape(client)
    assert changed(before, after, R) == {lbl(model="chat/solo", provider="up1", status="502"): 1}


async def test_upstream_rate_limit_is_not_a_gateway_rate_limit(
        make_gateway: Any, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    one, _ = fakes
    client = await make_gateway()
    before = await scrape(client)
    limited = Reply(429, error_body("slow down", "requests", "rate_limit_exceeded"),
                    headers={"Retry-After": "0"})
    one.push(limited, limited)
    resp = await post(client, KEY_ALPHA, chat("chat/solo"))
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "upstream_rate_limited"
    after = await scrape(client)
    assert changed(before, after, "modelyard_upstream_errors_total") == {
        lbl(provider="up1", status="429"): 2}
    assert changed(before, after, "modelyard_rate_limited_total") == {}


async def test_unauthenticated_request_counted(make_gateway: Any) -> None:
    """401s are refused before any upstream and count with provider="none"."""
    client = await make_gateway()
    before = await scrape(client)
    resp = await post(client, "sk-wrong-key-000", chat("chat/main"))
    assert resp.status == 401
    after = await scrape(client)
    assert changed(before, after, R) == {lbl(model="none", provider="none", status="401"): 1}


async def test_provider_only_behind_a_wildcard_is_up(aiohttp_client: Any) -> None:
    """A provider reached only through a wildcard route without a `models:` list has never
    failed: provider_up must be 1 (0 fires ModelyardProviderDown and ModelyardNoProviderUp)."""
    import yaml

    from gateway.app import create_app
    from gateway.config import parse_config

    cfg = {"auth": {"master_key": MASTER}, "providers": {"local": {"adapter": "mock"}},
           "routes": {"mock/*": {"targets": [{"provider": "local"}]}},
           "default_model": "mock/echo"}
    client = await aiohttp_client(create_app(parse_config(yaml.safe_dump(cfg), env={})))
    r = await client.post("/v1/chat/completions", json=chat("mock/echo"), headers=auth(MASTER))
    assert r.status == 200
    samples = await scrape(client)
    assert samples[("modelyard_provider_up", lbl(provider="local"))] == 1
