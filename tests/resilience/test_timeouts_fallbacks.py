"""Timeouts (first token, total deadline) and fallbacks (targets, routes, context windows)."""
from __future__ import annotations

from prometheus_client import REGISTRY

from tests.resilience.conftest import chat, frames, gateway_config, post, resources, route
from tests.resilience.fake_upstream import hang, status, stream

FAST = {"connect_s": 1, "first_token_s": 0.3, "total_s": 5, "idle_s": 1}


async def test_first_token_timeout_gives_504_after_the_retries(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=FAST))
    fake.script("p1", hang(10), hang(10), hang(10))
    r = await post(client, chat())
    assert r.status == 504
    assert r.error["type"] == "timeout_error"
    assert fake.calls["p1"] == 3
    assert 0.9 <= r.elapsed < 1.8  # three 0.3 s waits plus tiny backoffs


async def test_first_token_timeout_applies_to_streams_before_the_first_event(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1")}, timeouts=FAST))
    fake.script("p1", stream(delay_s=10), stream(3))
    r = await post(client, chat(stream=True))
    assert r.status == 200
    assert frames(r.text)[-1] == "[DONE]"
    assert fake.calls["p1"] == 2
    assert r.elapsed < 1.5


async def test_total_deadline_spans_every_retry_and_fallback(fake, gateway):
    timeouts = {"connect_s": 1, "first_token_s": 0.4, "total_s": 1.0}
    cfg = gateway_config(fake, {"m": route("p1", fallbacks=["n"]), "n": route("p2")},
                         timeouts=timeouts, retries={"attempts": 5, "backoff_s": 0.01})
    client = await gateway(cfg)
    fake.script("p1", *[hang(10)] * 5)
    fake.script("p2", *[hang(10)] * 5)
    r = await post(client, chat())
    assert r.status == 504
    assert 0.95 <= r.elapsed < 1.5
    assert fake.calls["p1"] == 3  # 0.4 + 0.4 + the 0.2 s left
    assert fake.calls["p2"] == 0


async def test_next_target_then_fallback_models_in_order(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1", "p2", fallbacks=["f1", "f2"]),
                                "f1": route("p3"), "f2": route("p4")},
                         providers=("p1", "p2", "p3", "p4"))
    client = await gateway(cfg)
    for p in ("p1", "p2", "p3"):
        fake.script(p, *[status(503)] * 3)
    before = REGISTRY.get_sample_value("modelyard_fallbacks_total",
                                       {"from_model": "m", "to_model": "f2"}) or 0
    r = await post(client, chat())
    assert r.status == 200, r.body
    assert r.body["model"] == "f2"
    assert r.headers["x-modelyard-provider"] == "p4"
    assert r.headers["x-modelyard-fallback"] == "f2"
    assert [fake.calls[p] for p in ("p1", "p2", "p3", "p4")] == [3, 3, 3, 1]
    assert fake.models["p4"] == ["up-p4"]
    after = REGISTRY.get_sample_value("modelyard_fallbacks_total",
                                      {"from_model": "m", "to_model": "f2"})
    assert after == before + 1


async def test_a_streamed_fallback_reports_the_fallback_model(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1", fallbacks=["f1"]), "f1": route("p2")})
    client = await gateway(cfg)
    fake.script("p1", *[status(500)] * 3)
    r = await post(client, chat(stream=True))
    assert r.status == 200
    assert r.headers["x-modelyard-fallback"] == "f1"
    assert r.headers["x-modelyard-provider"] == "p2"
    assert '"model":"f1"' in frames(r.text)[0]


async def test_no_fallback_header_when_the_route_answered(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1", fallbacks=["f1"]),
                                                 "f1": route("p2")}))
    r = await post(client, chat())
    assert r.status == 200 and r.body["model"] == "m"
    assert "x-modelyard-fallback" not in r.headers


async def test_context_window_errors_go_to_a_larger_model(fake, gateway):
    cfg = gateway_config(fake, {"small": route("p1", "p2", fallbacks=["other"],
                                               context_fallbacks=["big"]),
                                "other": route("p3"), "big": route("p4")},
                         providers=("p1", "p2", "p3", "p4"))
    client = await gateway(cfg)
    too_long = status(400, "This model's maximum context length is 8192 tokens",
                      code_field="context_length_exceeded")
    fake.script("p1", too_long)
    fake.script("p2", too_long)
    r = await post(client, chat("small"))
    assert r.status == 200, r.body
    assert r.body["model"] == "big"
    assert r.headers["x-modelyard-fallback"] == "big"
    assert r.headers["x-modelyard-provider"] == "p4"
    assert fake.calls["p3"] == 0  # a plain fallback would not have a larger window
    assert fake.calls["p1"] + fake.calls["p2"] == 1  # the other target has the same window


async def test_context_window_error_without_a_context_fallback_is_a_400(fake, gateway):
    client = await gateway(gateway_config(fake, {"m": route("p1", fallbacks=["f"]),
                                                 "f": route("p2")}))
    fake.script("p1", status(400, "prompt is too long: 300000 tokens > 200000 maximum"))
    r = await post(client, chat())
    assert r.status == 400
    assert r.error["code"] == "context_length_exceeded"
    assert fake.calls["p2"] == 0


async def test_fallbacks_never_loop(fake, gateway):
    cfg = gateway_config(fake, {"a": route("p1", fallbacks=["b"]),
                                "b": route("p2", fallbacks=["a"])},
                         retries={"attempts": 2, "backoff_s": 0.01})
    client = await gateway(cfg)
    fake.script("p1", *[status(500)] * 10)
    fake.script("p2", *[status(500)] * 10)
    r = await post(client, chat("a"))
    assert r.status == 502
    assert (fake.calls["p1"], fake.calls["p2"]) == (2, 2)


async def test_fallbacks_skip_routes_the_key_may_not_use(fake, gateway):
    keys = [{"id": "narrow", "key": "sk-narrow", "models": ["m", "ok-*"]}]
    cfg = gateway_config(fake, {"m": route("p1", fallbacks=["secret", "ok-fb"]),
                                "secret": route("p2"), "ok-fb": route("p3")}, keys=keys)
    client = await gateway(cfg)
    fake.script("p1", *[status(500)] * 3)
    r = await post(client, chat(), headers={"Authorization": "Bearer sk-narrow"})
    assert r.status == 200
    assert r.headers["x-modelyard-fallback"] == "ok-fb"
    assert fake.calls["p2"] == 0


async def test_all_failed_summarises_the_attempts_and_logs_each(fake, gateway, caplog):
    cfg = gateway_config(fake, {"m": route("p1:1000", "p2:0.001")}, timeouts=FAST,
                         retries={"attempts": 2, "backoff_s": 0.01})
    client = await gateway(cfg)
    resources(client).balancer.rng.seed(4)
    fake.script("p1", status(500), status(502))
    fake.script("p2", status(503), status(503))
    caplog.set_level("WARNING", logger="gateway.dispatch")
    r = await post(client, chat())
    assert r.status == 502
    msg = r.error["message"]
    assert "4 upstream attempts" in msg
    assert "p1: 500; p1: 502; p2: 503 x2" in msg
    logged = [(rec.provider, rec.status) for rec in caplog.records
              if rec.getMessage() == "upstream attempt failed"]
    assert logged == [("p1", 500), ("p1", 502), ("p2", 503), ("p2", 503)]
    assert all(isinstance(rec.duration_ms, float) for rec in caplog.records
               if rec.getMessage() == "upstream attempt failed")


async def test_all_rate_limited_gives_429_with_the_shortest_retry_after(fake, gateway):
    cfg = gateway_config(fake, {"m": route("p1", "p2", fallbacks=["f"]), "f": route("p3")},
                         timeouts={"connect_s": 1, "first_token_s": 2, "total_s": 4})
    client = await gateway(cfg)
    fake.script("p1", status(429, headers={"Retry-After": "30"}))
    fake.script("p2", status(429, headers={"Retry-After": "7"}))
    fake.script("p3", status(429, headers={"retry-after-ms": "12000"}))
    r = await post(client, chat())
    assert r.status == 429
    assert r.headers["Retry-After"] == "7"
    assert r.error["type"] == "rate_limit_exceeded"
    assert [fake.calls[p] for p in ("p1", "p2", "p3")] == [1, 1, 1]
    assert r.elapsed < 1.0


async def test_connect_timeout_then_the_next_target(fake, gateway):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)  # never accepts: once its queue is full, new connections hang in SYN
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    try:
        cfg = gateway_config(fake, {"m": route("dead:1000", "p1:0.001")}, providers=("p1",),
                             timeouts={"connect_s": 0.2, "first_token_s": 2, "total_s": 5},
                             retries={"attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.01})
        cfg["providers"]["dead"] = {"adapter": "openai", "api_key": "sk-x",
                                    "base_url": f"http://127.0.0.1:{port}/v1"}
        client = await gateway(cfg)
        resources(client).balancer.rng.seed(6)
        r = await post(client, chat())
        assert r.status == 200
        assert r.headers["x-modelyard-provider"] == "p1"
        assert 0.38 <= r.elapsed < 1.2  # two 0.2 s connect timeouts, not the 2 s first-token one
    finally:
        for s in fillers + [srv]:
            s.close()
