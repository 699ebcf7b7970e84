"""Issue 6 through the gateway: one usage record per request, totals equal to what the fake
upstreams reported, whatever happened (streams, retries, fallbacks, cuts, disconnects)."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.accounting.jsonl import read_jsonl
from gateway.accounting.record import UsageRecord
from tests.e2e.conftest import MakeGateway, settle
from tests.e2e.support import KEY_FREE, KEY_T1, KEY_T2, MASTER, PRICE, auth, eventually, say
from tests.fakes import FakeOpenAI, Reply, Stream, error_body, text_stream

BACKUP_PRICE = {"input": 1.0, "output": 2.0}
TEAMS = {KEY_FREE: ("free", "free"), KEY_T1: ("t1", "t"), KEY_T2: ("t2", "t")}


@dataclass
class Sent:
    """What one request should have recorded: from what the fake reported."""

    rid: str
    key: str
    team: str
    model: str
    provider: str
    user: str
    prompt: int
    completion: int
    price: dict[str, float] | None

    @property
    def cost(self) -> float:
        if self.price is None:
            return 0.0
        return (self.prompt * self.price["input"] + self.completion * self.price["output"]) / 1e6


class Scenario:
    def __init__(self, gw: TestClient[Any, Any], fake: FakeOpenAI) -> None:
        self.gw, self.fake = gw, fake
        self.sent: list[Sent] = []

    def expect(self, rid: str, key: str, model: str, provider: str, user: str, p: int, c: int,
               price: dict[str, float] | None = PRICE) -> None:
        kid, team = TEAMS[key]
        self.sent.append(Sent(rid, kid, team, model, provider, user, p, c, price))

    async def plain(self, key: str, text: str, model: str = "priced/m", user: str = "",
                    **extra: Any) -> tuple[str, dict[str, Any]]:
        body = say(text, model, **extra)
        if user:
            body["user"] = user
        r = await self.gw.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.status == 200, await r.text()
        return r.headers["x-request-id"], dict(await r.json())

    async def stream(self, key: str, text: str, *, include_usage: bool, user: str = "") \
            -> tuple[str, str]:
        extra: dict[str, Any] = {"stream": True}
        if include_usage:
            extra["stream_options"] = {"include_usage": True}
        if user:
            extra["user"] = user
        r = await self.gw.post("/v1/chat/completions", json=say(text, **extra), headers=auth(key))
        assert r.status == 200
        return r.headers["x-request-id"], await r.text()


async def fallback(sc: Scenario) -> Sent:
    """flaky/m fails twice on `up`; its fallback backup/m on `up2` answers."""
    sc.fake.push(Reply(500, error_body("boom", "server_error")),
                 Reply(503, error_body("down", "server_error")))
    rid, body = await sc.plain(KEY_T2, "usage 29 11", "flaky/m", user="carol")
    assert body["model"] == "backup/m"
    sc.expect(rid, KEY_T2, "backup/m", "up2", "carol", 29, 11, BACKUP_PRICE)
    return sc.sent[-1]


async def run_scenario(gw: TestClient[Any, Any], fake: FakeOpenAI) -> Scenario:
    sc = Scenario(gw, fake)
    rid, _ = await sc.plain(KEY_FREE, "usage 11 3", user="alice")
    sc.expect(rid, KEY_FREE, "priced/m", "up", "alice", 11, 3)
    rid, _ = await sc.plain(KEY_T1, "usage 12 4", user="alice")
    sc.expect(rid, KEY_T1, "priced/m", "up", "alice", 12, 4)
    # streams: the gateway asks upstream for usage either way; the client sees it only if asked
    rid, text = await sc.stream(KEY_T1, "usage 13 5", include_usage=True, user="bob")
    assert '"usage":{"prompt_tokens":13' in text
    sc.expect(rid, KEY_T1, "priced/m", "up", "bob", 13, 5)
    rid, text = await sc.stream(KEY_T2, "usage 17 7", include_usage=False, user="bob")
    assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")
    assert fake.last.json["stream_options"] == {"include_usage": True}
    sc.expect(rid, KEY_T2, "priced/m", "up", "bob", 17, 7)
    # a retry: the failed attempt reported nothing; one record, one count
    fake.push(Reply(500, error_body("boom", "server_error")))
    n = len(fake.requests)
    rid, _ = await sc.plain(KEY_FREE, "usage 23 9", user="carol")
    assert len(fake.requests) == n + 2
    sc.expect(rid, KEY_FREE, "priced/m", "up", "carol", 23, 9)
    # a route without a price: tokens recorded, cost 0
    rid, _ = await sc.plain(KEY_FREE, "usage 31 13", "free/m")
    sc.expect(rid, KEY_FREE, "free/m", "up", "", 31, 13, None)
    await fallback(sc)  # priced by backup/m, the route that answered
    return sc


def sums(sent: list[Sent], dim: str) -> dict[str, tuple[int, int, int, float]]:
    out: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for s in sent:
        row = out[getattr(s, dim)]
        row[0] += 1
        row[1] += s.prompt
        row[2] += s.completion
        row[3] += s.cost
    return {k: (v[0], v[1], v[2], round(v[3], 9)) for k, v in out.items()}


async def usage_rows(gw: TestClient[Any, Any], query: str) -> list[dict[str, Any]]:
    r = await gw.get(f"/admin/usage?{query}", headers=auth(MASTER))
    assert r.status == 200, await r.text()
    return list((await r.json())["data"])


def records(path: Path) -> dict[str, UsageRecord]:
    recs = list(read_jsonl(path))
    ids = [r.request_id for r in recs]
    assert len(ids) == len(set(ids)), "a request id was recorded twice"
    return {r.request_id: r for r in recs}


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return tmp_path / "usage.jsonl"


async def test_usage_totals_equal_what_upstreams_reported(
        mode_url: str, make_gateway: MakeGateway, fake: FakeOpenAI, jsonl: Path) -> None:
    gw = await make_gateway(mode_url, usage={"jsonl_path": str(jsonl)})
    sc = await run_scenario(gw, fake)
    await settle(gw)
    for dim, field in (("key", "key"), ("team", "team"), ("model", "model"), ("user", "user"),
                       ("provider", "provider")):
        rows = await usage_rows(gw, f"group_by={dim}")
        got = {row[dim]: (row["requests"], row["prompt_tokens"], row["completion_tokens"],
                          round(row["cost_usd"], 9)) for row in rows}
        assert got == sums(sc.sent, field), dim
        for row in rows:
            assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
    assert len(sc.sent) == 7
    [free_m] = await usage_rows(gw, "model=free/m&group_by=model")
    assert free_m["cost_usd"] == 0 and free_m["unpriced_requests"] == 1
    # the JSON-lines sink: exactly one line per request, each as reported
    recs = records(jsonl)
    assert len(jsonl.read_text().splitlines()) == len(sc.sent) == len(recs)
    for s in sc.sent:
        r = recs[s.rid]
        assert (r.key_id, r.team, r.model, r.provider, r.user) == \
            (s.key, s.team, s.model, s.provider, s.user)
        assert (r.prompt_tokens, r.completion_tokens, r.status) == (s.prompt, s.completion, 200)
        assert r.cost_usd == pytest.approx(s.cost, abs=1e-12)
        assert r.priced == (s.price is not None)
    retried = recs[sc.sent[4].rid]
    assert retried.attempts == 2 and not retried.fallback
    assert [recs[s.rid].stream for s in sc.sent[:4]] == [False, False, True, True]


async def test_fallback_recorded_once(mode_url: str, make_gateway: MakeGateway,
                                      fake: FakeOpenAI, jsonl: Path) -> None:
    gw = await make_gateway(mode_url, usage={"jsonl_path": str(jsonl)})
    sc = Scenario(gw, fake)
    sent = await fallback(sc)
    await settle(gw)
    recs = records(jsonl)
    assert list(recs) == [sent.rid]  # three upstream attempts, one record
    fell = recs[sent.rid]
    assert (fell.model, fell.fallback, fell.provider, fell.upstream_model, fell.attempts) == \
        ("backup/m", "backup/m", "up2", "backup-up", 3)
    assert (fell.prompt_tokens, fell.completion_tokens, fell.status) == (29, 11, 200)
    [row] = await usage_rows(gw, "group_by=model,provider")
    assert (row["model"], row["provider"], row["requests"], row["total_tokens"]) == \
        ("backup/m", "up2", 1, 40)


async def test_fallback_priced_by_the_route_that_answered(
        make_gateway: MakeGateway, fake: FakeOpenAI, jsonl: Path) -> None:
    gw = await make_gateway(usage={"jsonl_path": str(jsonl)})
    sent = await fallback(Scenario(gw, fake))
    await settle(gw)
    assert records(jsonl)[sent.rid].cost_usd == pytest.approx(sent.cost, abs=1e-12)


async def test_cut_streams_count_what_was_received(mode_url: str, make_gateway: MakeGateway,
                                                   fake: FakeOpenAI, jsonl: Path) -> None:
    gw = await make_gateway(mode_url, usage={"jsonl_path": str(jsonl)})
    events = text_stream(["Hel", "lo"], model="m-up", usage=(37, 2))
    fake.push(Stream(events, drop_after=len(events)))  # usage sent, then cut before [DONE]
    fake.push(Stream(events, drop_after=2))  # cut before any usage
    ids = []
    for _ in range(2):
        r = await gw.post("/v1/chat/completions", json=say("x", stream=True, user="dan"),
                          headers=auth(KEY_FREE))
        text = await r.text()
        assert r.status == 200 and '"error"' in text and "[DONE]" not in text
        ids.append(r.headers["x-request-id"])
    await settle(gw)
    recs = records(jsonl)
    a, b = recs[ids[0]], recs[ids[1]]
    assert (a.cut, a.prompt_tokens, a.completion_tokens) == ("upstream_cut", 37, 2)
    assert a.cost_usd == pytest.approx((37 * 2.0 + 2 * 8.0) / 1e6)
    # cut before the provider reported usage: what was received is counted (one delta chunk,
    # about one token) and marked as an estimate
    assert (b.cut, b.prompt_tokens, b.completion_tokens) == ("upstream_cut", 0, 1)
    assert b.extra.get("usage_estimated") is True and "usage_estimated" not in a.extra
    [row] = await usage_rows(gw, "user=dan&group_by=user")
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (2, 37, 3)


async def test_client_disconnects_are_recorded_once(mode_url: str, make_gateway: MakeGateway,
                                                    fake: FakeOpenAI, jsonl: Path) -> None:
    gw = await make_gateway(mode_url, usage={"jsonl_path": str(jsonl)})
    hold = asyncio.Event()  # never set: the upstream stalls after its second event
    fake.push(Stream(text_stream(["Hel", "lo"], model="m-up", usage=(41, 2)), pause={2: hold}))
    r = await gw.post("/v1/chat/completions", json=say("x", stream=True, user="eve"),
                      headers=auth(KEY_FREE))
    rid_stream = r.headers["x-request-id"]
    first = await r.content.readline()
    assert first.startswith(b"data: ")
    r.close()  # the client goes away mid-stream
    upstream = fake.requests[-1]
    await asyncio.wait_for(upstream.finished.wait(), 5)
    assert upstream.outcome == "client_gone"  # the upstream call was cancelled too
    # a non-streamed request whose client leaves while the upstream is still thinking
    fake.push(Reply(200, {}, gate=asyncio.Event()))
    task = asyncio.ensure_future(gw.post("/v1/chat/completions", json=say("y", user="eve"),
                                         headers={**auth(KEY_FREE), "x-request-id": "leaver-1"}))
    await fake.wait_requests(2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(fake.requests[-1].finished.wait(), 5)

    async def both_recorded() -> bool:
        await settle(gw)
        return jsonl.exists() and len(jsonl.read_text().splitlines()) == 2

    await eventually(both_recorded, 3.0, "two records")
    recs = records(jsonl)
    s = recs[rid_stream]
    assert s.cut == "client_disconnected" and s.stream and s.provider == "up"
    [p] = [r for r in recs.values() if r.extra.get("client_request_id") == "leaver-1"]
    assert p.cut == "client_disconnected" and p.status == 499
    assert p.provider == "up"  # the upstream it was waiting on, though no attempt had ended
    [row] = await usage_rows(gw, "user=eve&group_by=user")
    assert row["requests"] == 2


async def test_a_client_request_id_sent_twice_is_two_records(make_gateway: MakeGateway,
                                                             jsonl: Path) -> None:
    gw = await make_gateway(usage={"jsonl_path": str(jsonl)})
    for _ in range(2):
        r = await gw.post("/v1/chat/completions", json=say("usage 3 4"),
                          headers={**auth(KEY_FREE), "x-request-id": "same-id"})
        assert r.status == 200 and r.headers["x-request-id"] == "same-id"
    await settle(gw)
    recs = records(jsonl)  # distinct request ids: the gateway's own
    assert len(recs) == 2
    assert [r.extra.get("client_request_id") for r in recs.values()] == ["same-id", "same-id"]
    [row] = await usage_rows(gw, "key=free&group_by=key")
    assert (row["requests"], row["total_tokens"]) == (2, 14)


@pytest.mark.parametrize("raw_id,kept", [(b"caf\xff-1", "caf\ufffd-1"), (b"caf\xc3\xa9-2", "caf\u00e9-2")])
async def test_a_client_request_id_that_is_not_utf8_is_recorded_and_echoed(
        make_gateway: MakeGateway, jsonl: Path, raw_id: bytes, kept: str) -> None:
    """Header bytes that are not UTF-8 (obs-text) become U+FFFD: the record can be written as
    JSON and the answer's header carries the same id the record has."""
    import json

    gw = await make_gateway(usage={"jsonl_path": str(jsonl)})
    body = json.dumps(say("usage 3 4")).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
                     + KEY_FREE.encode() + b"\r\nContent-Type: application/json\r\n"
                     + b"x-request-id: " + raw_id + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nx-request-id: " + kept.encode() + b"\r\n" in head
    await settle(gw)
    [rec] = records(jsonl).values()
    assert rec.extra["client_request_id"] == kept
    assert (rec.prompt_tokens, rec.completion_tokens) == (3, 4)


async def test_dedup_window_sets_how_long_redis_remembers_record_ids(
        redis_url: str, make_gateway: MakeGateway) -> None:
    """`usage.dedup_window_s` is the life of the per-record ids Redis keeps to count a retried
    batch once (the bulk of the usage store's memory after the stream: sized in the README)."""
    from redis.asyncio import Redis

    gw = await make_gateway(redis_url, usage={"dedup_window_s": 120})
    r = await gw.post("/v1/chat/completions", json=say("hi"), headers=auth(KEY_FREE))
    assert r.status == 200
    await settle(gw)
    client = Redis.from_url(redis_url)
    try:
        seen = [k async for k in client.scan_iter(match="modelyard:{usage}:seen:*")]
        assert len(seen) == 1
        assert 100 < await client.ttl(seen[0]) <= 120
    finally:
        await client.aclose()
