"""Bounded label values (issue 7, item 1): no key ids, user ids, secrets or prompts; teams from
the config (else `other`/`none`); a wildcard route's models cap at `metrics.max_models`."""
from __future__ import annotations

from typing import Any

from tests.fakes import FakeOpenAI
from tests.observability.support import (KEY_ALPHA, KEY_IDS, KEY_NOTEAM, KEY_STRAY, MASTER,
                                         SECRETS, STRAY_TEAM, auth, changed, chat,
                                         lbl, parse)

USER = "user-zeta-99173"
PROMPT = "PROMPT-TEXT-7c1e please summarise the quarterly numbers"
ODD_MODEL = "vendor/PROMPT-IN-MODEL-ID-51aa"
DYN_TEAM = "dynamic-team-x42"


async def test_no_identity_secret_or_prompt_in_any_label(make_gateway: Any,
                                                         fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    client = await make_gateway()
    before = parse(await (await client.get("/metrics")).text())
    resp = await client.post("/admin/keys", json={"id": "dyn-key-0077", "team": DYN_TEAM},
                             headers=auth(MASTER))
    assert resp.status == 201
    dyn_secret = (await resp.json())["key"]
    for key in (KEY_ALPHA, KEY_STRAY, KEY_NOTEAM, dyn_secret, MASTER):
        for model, stream in (("chat/main", False), ("chat/main", True), ("wild/w1", False),
                              (ODD_MODEL, False)):
            body = chat(model, PROMPT, user=USER, stream=stream)
            r = await client.post("/v1/chat/completions", json=body, headers=auth(key))
            await r.read()
            assert r.status == (404 if model == ODD_MODEL else 200), await r.text()
    emb = await client.post("/v1/embeddings", headers=auth(KEY_ALPHA),
                            json={"model": "wild/emb", "input": PROMPT, "user": USER})
    assert emb.status == 200
    text = await (await client.get("/metrics")).text()
    forbidden = (*SECRETS, dyn_secret, *KEY_IDS, "dyn-key-0077", USER, "PROMPT", "summarise",
                 DYN_TEAM, STRAY_TEAM)
    for needle in forbidden:
        assert needle not in text, needle
    samples = parse(text)
    # the collectors are process-wide: judge the team labels of the series this test moved
    moved = {k for k, v in samples.items() if v != before.get(k)}
    teams = {v for _, labels in moved for k, v in labels if k == "team"}
    assert teams and teams <= {"alpha", "beta", "other", "none"}
    assert {"alpha", "other", "none"} <= teams  # configured, unlisted/dynamic, no team
    assert samples[("modelyard_tokens_total", lbl(model="chat/main", provider="up1",
                                                  team="other", type="prompt"))] > 0


async def test_wildcard_model_label_caps_at_max_models(make_gateway: Any) -> None:
    client = await make_gateway(max_models=2)
    before = parse(await (await client.get("/metrics")).text())
    for model in ("wild/cap-a", "wild/cap-b", "wild/cap-c", "wild/cap-d", "wild/cap-a"):
        r = await client.post("/v1/chat/completions", json=chat(model), headers=auth(KEY_ALPHA))
        assert r.status == 200
    after = parse(await (await client.get("/metrics")).text())
    assert changed(before, after, "modelyard_requests_total") == {
        lbl(model="wild/cap-a", provider="up2", status="200"): 2,
        lbl(model="wild/cap-b", provider="up2", status="200"): 1,
        lbl(model="other", provider="up2", status="200"): 2,
    }
    assert {dict(k)["model"] for k in changed(before, after, "modelyard_tokens_total")} == {
        "wild/cap-a", "wild/cap-b", "other"}
