"""Config loading: `${VAR}` expansion, strict validation with paths, the shipped config."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.config.loader import expand_env
from tests.core.support import base_config, build, with_changes

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "gateway.yaml"

MINIMAL = """
providers:
  up: {adapter: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${UP_KEY:-none}"}
routes:
  "up/*": {targets: [{provider: up}]}
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.problems


# ----------------------------------------------------------------------------- expansion


def expand(value: str, env: dict[str, str]) -> tuple[object, list[str]]:
    errors: list[str] = []
    out = expand_env({"field": value}, "", env, errors)
    return out["field"], errors


@pytest.mark.parametrize("text, env, expected", [
    ("${A}", {"A": "x"}, "x"),
    ("${A}", {"A": ""}, ""),  # set but empty: the empty string, not an error
    ("${A:-d}", {}, "d"),  # unset: the default
    ("${A:-d}", {"A": ""}, "d"),  # empty: the default too (shell `:-`)
    ("${A:-d}", {"A": "v"}, "v"),
    ("${A:-}", {}, ""),
    ("http://${H:-127.0.0.1}:${P}/v1", {"P": "81"}, "http://127.0.0.1:81/v1"),
    ("no vars here", {}, "no vars here"),
])
def test_expansion_has_shell_meaning(text: str, env: dict[str, str], expected: str) -> None:
    out, errors = expand(text, env)
    assert errors == []
    assert out == expected


def test_unset_variable_without_default_is_an_error_naming_it_and_the_path() -> None:
    problems = problems_of(MINIMAL.replace("${UP_KEY:-none}", "${UP_KEY}"))
    assert problems == ["providers.up.api_key: environment variable UP_KEY is not set"]
    # set (even to the empty string), it is not an error
    cfg = parse_config(MINIMAL.replace("${UP_KEY:-none}", "${UP_KEY}"), env={"UP_KEY": ""})
    assert cfg.providers["up"].api_key == ""


def test_whole_reference_takes_the_type_of_its_field() -> None:
    text = MINIMAL + """
server: {port: "${PORT}", max_body_mb: "${MB:-0.5}", metrics_port: "${MPORT:-}", host: "${HOST}"}
logging: {access_log: "${ACCESS:-false}"}
"""
    cfg = parse_config(text, env={"PORT": "9090", "HOST": "10"})
    assert cfg.server.port == 9090 and isinstance(cfg.server.port, int)
    assert cfg.server.max_body_mb == 0.5
    assert cfg.server.metrics_port is None  # empty value of an optional field: null
    assert cfg.server.host == "10" and isinstance(cfg.server.host, str)
    assert cfg.logging.access_log is False
    assert problems_of(text, env={"PORT": "eighty", "HOST": "h"}) == [
        "server.port: expected an integer, got 'eighty'"]


def test_string_values_from_the_environment_are_kept_verbatim() -> None:
    # YAML would read 0123 as an octal number and 1_000 as 1000: a key must stay what was set
    for secret in ("0123", "1_000", "1.50", "true", "0x1F"):
        cfg = parse_config(MINIMAL, env={"UP_KEY": secret})
        assert cfg.providers["up"].api_key == secret


# ----------------------------------------------------------------------------- validation

BAD = """
server: {port: abc, workers: 2, colour: blue}
auth:
  keys:
    - {id: k1, key: abc, modles: ["x"]}
    - {id: k2, key: def, expires_at: "next tuesday"}
providers:
  openai: {adapter: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${OPENAI_API_KEY}"}
  weird: {adapter: foo}
routes:
  "openai/gpt-4o":
    targets:
      - {provider: opneai, model: gpt-4o}
      - {provider: openai, weight: 0}
      - {provider: openai, weight: heavy}
      - {provider: openai, weight: -2}
  "x/y": {alias: nowhere/model}
  a: {alias: b}
  b: {alias: a}
  "z/*": {targets: []}
default_model: missing/model
bogus_top: 1
"""

EXPECTED = [
    "providers.openai.api_key: environment variable OPENAI_API_KEY is not set",
    "bogus_top: unknown key",
    "server.colour: unknown key",
    "server.port: expected an integer, got 'abc'",
    "auth.keys[0].modles: unknown key (did you mean 'models'?)",
    "auth.keys[1].expires_at: must be an ISO 8601 time (2030-01-31T00:00:00Z) or unix seconds",
    "providers.weird.adapter: unknown adapter 'foo' (known: openai, anthropic, gemini, azure, mock)",
    'routes."openai/gpt-4o".targets[0].provider: unknown provider \'opneai\'',
    'routes."openai/gpt-4o".targets[1].weight: must be greater than 0',
    'routes."openai/gpt-4o".targets[2].weight: expected a number, got \'heavy\'',
    'routes."openai/gpt-4o".targets[3].weight: must be greater than 0',
    'routes."x/y".alias: alias to nowhere: no route for \'nowhere/model\'',
    "routes.a.alias: alias cycle a -> b -> a",
    "routes.b.alias: alias cycle b -> a -> b",
    'routes."z/*".targets: a route needs at least one target (or `alias`)',
    "default_model: no route for model 'missing/model'",
    "server.workers: more than one worker needs state.redis_url (limits must stay exact "
    "across processes)",
]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    problems = problems_of(BAD)
    assert sorted(problems) == sorted(EXPECTED)


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BAD, source="bad.yaml", env={})
    text = str(info.value)
    assert text.startswith("invalid config bad.yaml:")
    assert all(f"  - {p}" in text for p in EXPECTED)


@pytest.mark.parametrize("section, value, expected", [
    ("server", {"port": 70000}, "server.port: must be 0-65535"),
    ("server", {"max_body_mb": 0}, "server.max_body_mb: must be greater than 0"),
    ("server", {"port": True}, "server.port: expected an integer, got True"),
    ("retries", {"attempts": 0}, "retries.attempts: must be at least 1 (the first try counts)"),
    ("retries", {"attempts": "x"}, "retries.attempts: expected an integer, got 'x'"),
    ("timeouts", {"total_s": -1}, "timeouts.total_s: must be greater than 0"),
    ("state", {"on_redis_error": "maybe"}, "state.on_redis_error: must be one of 'open', "
                                            "'closed', got 'maybe'"),
    ("routes", {"a/b": {"targets": "nope"}}, 'routes."a/b".targets: expected a list, got str'),
    ("routes", {"a/*x": {"targets": [{"provider": "fakeai"}]}},
     "routes.\"a/*x\": a wildcard route must look like 'vendor/*'"),
    ("routes", {"a/b": {"targets": [{"model": "m"}]}}, 'routes."a/b".targets[0].provider: required'),
    ("routes", {"a/b": {"targets": [{"provider": "fakeai"}], "fallbacks": ["a/b"]}},
     'routes."a/b".fallbacks[0]: a route cannot fall back to itself'),
    ("routes", {"a/b": {"targets": [{"provider": "fakeai"}], "fallbacks": ["q/r"]}},
     'routes."a/b".fallbacks[0]: no route for model \'q/r\''),
    ("providers", {"fakeai": {"base_url": "http://x/v1"}}, "providers.fakeai.adapter: required"),
    ("auth", {"keys": [{"id": "d", "key": "a"}, {"id": "d", "key": "b"}]},
     "auth.keys[1].id: duplicate key id 'd'"),
    ("auth", {"keys": [{"id": "h", "key_sha256": "xyz"}]},
     "auth.keys[0].key_sha256: must be a 64-character hex SHA-256 digest"),
    ("usage", {"dedup_window_s": 59}, "usage.dedup_window_s: must be at least 60 (seconds)"),
    ("usage", {"stream_maxlen": 0}, "usage.stream_maxlen: must be a positive integer"),
    ("usage", {"buffer": -1}, "usage.buffer: must be a positive integer"),
])
def test_single_problem(section: str, value: object, expected: str) -> None:
    data = base_config("http://127.0.0.1:9/v1")
    if section in ("routes", "providers") and isinstance(value, dict):
        value = {**data[section], **value}
    with pytest.raises(ConfigError) as info:
        build(with_changes(data, **{section: value}))
    assert info.value.problems == [expected]


def test_a_secret_with_the_wrong_type_is_not_echoed() -> None:
    text = MINIMAL + "auth: {master_key: [hunter2-secret]}\n"
    problems = problems_of(text)
    assert problems == ["auth.master_key: expected a string"]
    assert "hunter2" not in str(problems)


def test_expiry_in_unix_seconds_or_an_unquoted_yaml_time_is_accepted() -> None:
    for expiry in ("1700000000", "2030-01-31T00:00:00Z", "2030-01-31"):
        cfg = parse_config(MINIMAL + f"auth: {{keys: [{{id: k, key: s, expires_at: {expiry}}}]}}\n",
                           env={})
        assert cfg.auth.keys[0].expires_at


def test_workers_with_redis_is_fine() -> None:
    cfg = build(with_changes(base_config("http://127.0.0.1:9/v1"),
                             server={"workers": 4}, state={"redis_url": "redis://127.0.0.1:1/0"}))
    assert cfg.server.workers == 4


def test_alias_through_a_wildcard_is_valid() -> None:
    data = base_config("http://127.0.0.1:9/v1")
    data["routes"]["mini"] = {"alias": "openai/gpt-4o-mini"}  # lands on openai/*
    assert build(data).routes["mini"].alias == "openai/gpt-4o-mini"


def test_syntax_error_and_non_mapping() -> None:
    assert problems_of("routes: [unclosed")[0].startswith("YAML syntax:")
    assert problems_of("- a list") == ["config: the top level must be a mapping"]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "no-such-config.yaml", env={})
    assert "cannot read" in info.value.problems[0]


# ----------------------------------------------------------------------------- the shipped config


def test_shipped_config_validates_with_no_environment() -> None:
    cfg = load_config(SHIPPED, env={})
    assert cfg.default_model == "mock/echo"
    assert cfg.providers["local"].adapter == "mock"
    assert cfg.routes["mock/*"].targets[0].provider == "local"
    assert cfg.server.port == 8080 and cfg.server.host == "127.0.0.1"
    assert cfg.auth.keys[0].key == "sk-modelyard-demo"
    assert cfg.auth.master_key == "" and cfg.state.redis_url == ""
    for name in ("openai", "anthropic", "google", "azure", "lunaby", "lunos", "openrouter",
                 "groq", "mistral", "vllm", "ollama"):
        assert name in cfg.providers, name


def test_shipped_config_takes_keys_and_port_from_the_environment() -> None:
    cfg = load_config(SHIPPED, env={"OPENAI_API_KEY": "sk-real", "MODELYARD_PORT": "9999"})
    assert cfg.providers["openai"].api_key == "sk-real"
    assert cfg.server.port == 9999
