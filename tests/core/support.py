"""Shared constants and config builders for the core gateway tests."""
from __future__ import annotations

import copy
from typing import Any

import yaml

from gateway.config import GatewayConfig, parse_config

MASTER = "sk-master-3f9a1c0b77"
KEY_A = "sk-team-a-8d2e7b41aa"  # team a: openai/* and the `fast` alias only
KEY_ALL = "sk-all-5c1d0e9f3b"  # no `models`: every route
KEY_OLD = "sk-old-0a9b8c7d6e"  # expired
KEY_HASHED = "sk-hashed-71e0c2d4"  # configured by its SHA-256 only
PROVIDER_KEY = "sk-upstream-provider-77aa55"
SECRETS = (MASTER, KEY_A, KEY_ALL, KEY_OLD, KEY_HASHED, PROVIDER_KEY)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def base_config(base_url: str) -> dict[str, Any]:
    """A routing table over one fake OpenAI upstream (`fakeai`) and the in-process mock."""
    import hashlib

    return {
        "server": {"max_body_mb": 1},
        "auth": {"master_key": MASTER, "keys": [
            {"id": "team-a", "key": KEY_A, "team": "a", "models": ["openai/*", "fast"]},
            {"id": "all", "key": KEY_ALL, "team": "b"},
            {"id": "old", "key": KEY_OLD, "expires_at": "2001-01-01T00:00:00Z"},
            {"id": "hashed", "key_sha256": hashlib.sha256(KEY_HASHED.encode()).hexdigest(),
             "models": ["mock/*"]},
        ]},
        "providers": {
            "fakeai": {"adapter": "openai", "base_url": base_url, "api_key": PROVIDER_KEY,
                       "headers": {"X-Extra": "yes"}},
            "local": {"adapter": "mock"},
        },
        "routes": {
            "openai/gpt-4o": {"targets": [{"provider": "fakeai", "model": "gpt-4o-2024-08-06"}]},
            "openai/*": {"targets": [{"provider": "fakeai"}],
                         "models": ["openai/gpt-4o-mini", "openai/text-embedding-3-small"]},
            "fast": {"alias": "openai/gpt-4o"},
            "other/model": {"targets": [{"provider": "fakeai", "model": "other-upstream"}]},
            "mock/*": {"targets": [{"provider": "local"}], "models": ["mock/echo"]},
        },
        "default_model": "fast",
        "retries": {"attempts": 1, "backoff_s": 0},
        "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 10, "idle_s": 5},
    }


def build(data: dict[str, Any], env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(yaml.safe_dump(data, sort_keys=False), env=env or {})


def with_changes(data: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out.update(sections)
    return out
