"""Routing: exact, alias, wildcards (longest prefix), default model, weights, 404s, key globs."""
from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from gateway.balancer import Balancer
from gateway.config.schema import Cooldown
from gateway.errors import ModelNotFound
from gateway.routing import RouteTable
from tests.core.conftest import MakeGateway
from tests.core.support import KEY_A, KEY_ALL, MASTER, auth, base_config, build
from tests.fakes import FakeOpenAI

URL = "http://127.0.0.1:9/v1"
HELLO = [{"role": "user", "content": "hello"}]


def table(**extra_routes: Any) -> RouteTable:
    data = base_config(URL)
    data["providers"]["other"] = {"adapter": "openai", "base_url": "http://127.0.0.1:8/v1",
                                  "api_key": "k2"}
    data["routes"].update(extra_routes)
    return RouteTable(build(data))


def test_exact_route() -> None:
    res = table().resolve("openai/gpt-4o")
    assert res.model_id == "openai/gpt-4o"
    assert res.route.id == "openai/gpt-4o" and not res.route.wildcard
    [t] = res.targets
    assert (t.provider.name, t.model) == ("fakeai", "gpt-4o-2024-08-06")
    assert t.provider.base_url == URL


def test_alias_and_alias_chain() -> None:
    rt = table(chain={"alias": "fast"})
    for name in ("fast", "chain"):
        res = rt.resolve(name)
        assert res.model_id == name  # the ID the client sent is kept for the response
        assert res.route.id == "openai/gpt-4o"
        assert res.targets[0].model == "gpt-4o-2024-08-06"


def test_wildcard_sends_the_suffix_upstream() -> None:
    rt = table(**{"router/*": {"targets": [{"provider": "other"}]}})
    res = rt.resolve("openai/gpt-4o-mini")
    assert res.route.id == "openai/gpt-4o-mini" and res.route.wildcard
    assert res.targets[0].model == "gpt-4o-mini"
    nested = rt.resolve("router/anthropic/claude-sonnet-4-5")  # everything after the first '/'
    assert (nested.targets[0].provider.name, nested.targets[0].model) == (
        "other", "anthropic/claude-sonnet-4-5")


def test_exact_route_beats_wildcard() -> None:
    assert table().resolve("openai/gpt-4o").targets[0].model == "gpt-4o-2024-08-06"


def test_longest_matching_wildcard_wins() -> None:
    rt = table(**{"lunos/*": {"targets": [{"provider": "fakeai"}]},
                  "lunos/openai/*": {"targets": [{"provider": "other"}]}})
    deep = rt.resolve("lunos/openai/gpt-4o")
    assert deep.targets[0].provider.name == "other"
    assert deep.targets[0].model == "openai/gpt-4o"
    shallow = rt.resolve("lunos/meta/llama-3")
    assert shallow.targets[0].provider.name == "fakeai"
    assert shallow.targets[0].model == "meta/llama-3"


def test_alias_to_a_wildcard_model() -> None:
    res = table(mini={"alias": "openai/gpt-4o-mini"}).resolve("mini")
    assert res.model_id == "mini" and res.targets[0].model == "gpt-4o-mini"


@pytest.mark.parametrize("model, close", [
    ("gpt-4o", "openai/gpt-4o"),
    ("openai/gpt-4", None),  # caught by openai/*: not a 404
    ("other/modle", "other/model"),
    ("fats", "fast"),
])
def test_unknown_model_lists_close_matches(model: str, close: str | None) -> None:
    rt = table()
    if close is None:
        assert rt.resolve(model).targets[0].model == "gpt-4"
        return
    with pytest.raises(ModelNotFound) as info:
        rt.resolve(model)
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert f"'{model}'" in err.message and close in err.message.split("Did you mean:")[1]


def test_wildcard_needs_a_model_after_the_prefix() -> None:
    with pytest.raises(ModelNotFound):
        table().resolve("openai/")


def test_weighted_order_follows_the_weights() -> None:
    rt = table(**{"w/m": {"targets": [{"provider": "fakeai", "model": "heavy", "weight": 3},
                                      {"provider": "other", "model": "light", "weight": 1}]}})
    targets = rt.resolve("w/m").targets
    balancer = Balancer(Cooldown())
    random.seed(20240611)
    first = Counter(balancer.order(targets, "weighted")[0].model for _ in range(4000))
    assert first["heavy"] + first["light"] == 4000
    assert 0.72 <= first["heavy"] / 4000 <= 0.78  # 3:1
    orders = {tuple(t.model for t in balancer.order(targets, "weighted")) for _ in range(50)}
    assert orders == {("heavy", "light"), ("light", "heavy")}  # the rest follow as fallbacks


# ----------------------------------------------------------------------------- through the app


async def test_weighted_choice_end_to_end(fake: FakeOpenAI, make_gateway: MakeGateway) -> None:
    data = base_config(fake.base_url)
    data["routes"]["w/m"] = {"targets": [{"provider": "fakeai", "model": "heavy", "weight": 3},
                                         {"provider": "fakeai", "model": "light", "weight": 1}]}
    client = await make_gateway(data)
    random.seed(12345)
    for _ in range(200):
        resp = await client.post("/v1/chat/completions", headers=auth(KEY_ALL),
                                 json={"model": "w/m", "messages": HELLO})
        assert resp.status == 200
    seen = Counter(r.json["model"] for r in fake.requests)
    assert sum(seen.values()) == 200
    assert 130 <= seen["heavy"] <= 170, seen


async def test_default_model_when_the_request_has_none(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_A), json={"messages": HELLO})
    assert resp.status == 200
    body = await resp.json()
    assert body["model"] == "fast"  # default_model, as the client would have sent it
    assert fake.last.json["model"] == "gpt-4o-2024-08-06"
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_A),
                         json={"model": None, "messages": HELLO})
    assert resp.status == 200 and len(fake.requests) == 2


async def test_unknown_model_is_a_404_without_upstream_call(fake: FakeOpenAI, gw: Any) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_ALL),
                         json={"model": "other/modle", "messages": HELLO})
    assert resp.status == 404
    err = (await resp.json())["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "invalid_request_error"
    assert "other/model" in err["message"]
    assert resp.headers["x-request-id"]
    assert fake.requests == []


@pytest.mark.parametrize("model, status", [
    ("openai/gpt-4o", 200),  # route ID matches openai/*
    ("openai/gpt-4o-mini", 200),  # wildcard model
    ("fast", 200),  # the alias is listed by name
    ("other/model", 403),
    ("mock/echo", 403),
])
async def test_key_globs(fake: FakeOpenAI, gw: Any, model: str, status: int) -> None:
    resp = await gw.post("/v1/chat/completions", headers=auth(KEY_A),
                         json={"model": model, "messages": HELLO})
    assert resp.status == status
    if status == 403:
        err = (await resp.json())["error"]
        assert err["code"] == "model_not_allowed" and err["param"] == "model"
        assert model in err["message"]
        assert fake.requests == []
    else:
        assert len(fake.requests) == 1


async def test_globs_match_the_sent_id_or_the_route_id(fake: FakeOpenAI,
                                                       make_gateway: MakeGateway) -> None:
    data = base_config(fake.base_url)
    data["auth"]["keys"] += [{"id": "route-only", "key": "sk-route-only-1", "models": ["openai/gpt-4o"]},
                             {"id": "alias-only", "key": "sk-alias-only-1", "models": ["fast"]}]
    client = await make_gateway(data)

    async def status(key: str, model: str) -> int:
        resp = await client.post("/v1/chat/completions", headers=auth(key),
                                 json={"model": model, "messages": HELLO})
        return resp.status

    assert await status("sk-route-only-1", "fast") == 200  # alias resolves to an allowed route
    assert await status("sk-route-only-1", "openai/gpt-4o-mini") == 403
    assert await status("sk-alias-only-1", "fast") == 200  # the sent ID matches
    assert await status("sk-alias-only-1", "openai/gpt-4o") == 403  # same route, other name
    assert len(fake.requests) == 2


async def test_models_lists_what_the_key_may_use(gw: Any) -> None:
    async def ids(key: str) -> list[str]:
        resp = await gw.get("/v1/models", headers=auth(key))
        assert resp.status == 200
        body = await resp.json()
        assert body["object"] == "list"
        for m in body["data"]:
            assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
        return [m["id"] for m in body["data"]]

    everything = ["openai/gpt-4o", "openai/gpt-4o-mini", "openai/text-embedding-3-small",
                  "fast", "other/model", "mock/echo"]
    assert await ids(KEY_A) == ["openai/gpt-4o", "openai/gpt-4o-mini",
                                "openai/text-embedding-3-small", "fast"]
    assert await ids(KEY_ALL) == everything
    assert await ids(MASTER) == everything
    resp = await gw.get("/v1/models")
    assert resp.status == 401
