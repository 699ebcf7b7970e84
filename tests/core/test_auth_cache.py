"""The authenticator's map of presented keys: one SHA-256 per key, never a stale answer.

Static and master keys map to their principal for the life of one `Authenticator` (a reload
builds a new one); dynamic keys map only to their digest, so every request still asks the key
store and a revocation or a change takes effect at once. Keys that fail are never remembered.
"""
from __future__ import annotations

from typing import Any

import pytest

import gateway.auth as auth_mod
from gateway.auth import Authenticator, Principal
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.limits.keystore import MemoryKeyStore
from gateway.state import DynamicKeys
from tests.core.support import KEY_A, KEY_ALL, MASTER, auth, base_config, build


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SHA-256 the authenticator computes, in order."""
    seen: list[str] = []
    real = auth_mod.digest

    def counting(secret: str) -> str:
        seen.append(secret)
        return real(secret)

    monkeypatch.setattr(auth_mod, "digest", counting)
    return seen


def _cfg(**changes: Any) -> Any:
    data = base_config("http://127.0.0.1:9/v1")
    data["auth"].update(changes)
    return build(data)


async def test_static_and_master_keys_are_hashed_once(digests: list[str]) -> None:
    authn = Authenticator(_cfg().auth)
    digests.clear()  # the config's own keys were hashed at load
    for _ in range(3):
        assert (await authn.authenticate(auth(KEY_A))).key_id == "team-a"
        assert (await authn.authenticate({"x-api-key": KEY_ALL})).key_id == "all"
        assert (await authn.authenticate(auth(MASTER))).is_master
    assert digests == [KEY_A, KEY_ALL, MASTER]


async def test_wrong_keys_are_never_remembered(digests: list[str]) -> None:
    authn = Authenticator(_cfg().auth)
    digests.clear()
    for _ in range(3):
        with pytest.raises(AuthenticationFailed) as info:
            await authn.authenticate(auth("sk-wrong-key"))
        assert info.value.code == "invalid_api_key"
    assert digests == ["sk-wrong-key"] * 3  # looked up (and refused) every time


async def test_a_reload_builds_a_new_map(digests: list[str]) -> None:
    old = Authenticator(_cfg().auth)
    assert (await old.authenticate(auth(KEY_A))).key_id == "team-a"
    new = Authenticator(_cfg(keys=[{"id": "all", "key": KEY_ALL, "team": "b"}]).auth)
    with pytest.raises(AuthenticationFailed):
        await new.authenticate(auth(KEY_A))  # removed from the config: refused at once
    assert (await new.authenticate(auth(KEY_ALL))).key_id == "all"


async def test_expiry_is_checked_on_every_request_of_a_remembered_key() -> None:
    data = base_config("http://127.0.0.1:9/v1")
    data["auth"]["keys"] = [{"id": "soon", "key": "sk-soon-1", "expires_at": 1000}]
    now = [999.0]
    authn = Authenticator(build(data).auth, clock=lambda: now[0])
    assert (await authn.authenticate(auth("sk-soon-1"))).key_id == "soon"
    now[0] = 1000.0
    with pytest.raises(AuthenticationFailed) as info:
        await authn.authenticate(auth("sk-soon-1"))
    assert info.value.code == "expired_api_key"


async def test_dynamic_key_revocation_takes_effect_on_the_next_request(
        digests: list[str]) -> None:
    store = MemoryKeyStore()
    authn = Authenticator(_cfg().auth, dynamic=DynamicKeys(store).principal)
    rec, secret = await store.create({"id": "dyn", "team": "a", "models": ["openai/*"]})
    digests.clear()
    for _ in range(3):
        assert (await authn.authenticate(auth(secret))).key_id == "dyn"
    assert digests == [secret]  # hashed once, the key store still asked every time
    await store.revoke("dyn")
    with pytest.raises(AuthenticationFailed) as info:
        await authn.authenticate(auth(secret))
    assert info.value.code == "invalid_api_key"
    with pytest.raises(AuthenticationFailed):
        await authn.authenticate(auth(secret))
    assert digests == [secret, secret]  # forgotten after the refusal: looked up afresh


async def test_dynamic_key_changes_take_effect_on_the_next_request() -> None:
    store = MemoryKeyStore()
    authn = Authenticator(_cfg().auth, dynamic=DynamicKeys(store).principal)
    _, secret = await store.create({"id": "dyn", "team": "a", "models": ["openai/*"],
                                    "limits": {"rpm": 5}})
    p = await authn.authenticate(auth(secret))
    p.check_model("openai/gpt-4o", "openai/gpt-4o")
    assert p.limits is not None and p.limits.rpm == 5
    await store.patch("dyn", {"models": ["mock/*"], "limits": {"rpm": 7}})
    p = await authn.authenticate(auth(secret))
    assert p.limits is not None and p.limits.rpm == 7
    with pytest.raises(PermissionDenied):
        p.check_model("openai/gpt-4o", "openai/gpt-4o")
    p.check_model("mock/echo", "mock/*")
    await store.delete("dyn")
    with pytest.raises(AuthenticationFailed):
        await authn.authenticate(auth(secret))


async def test_the_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_mod, "_KNOWN_MAX", 4)
    store = MemoryKeyStore()
    authn = Authenticator(_cfg().auth, dynamic=DynamicKeys(store).principal)
    secrets = [(await store.create({"id": f"k{i}"}))[1] for i in range(10)]
    for i, secret in enumerate(secrets):
        assert (await authn.authenticate(auth(secret))).key_id == f"k{i}"
        assert len(authn._known) <= 4
    for i, secret in enumerate(secrets):  # forgotten ones are simply looked up again
        assert (await authn.authenticate(auth(secret))).key_id == f"k{i}"


def test_model_answers_are_remembered_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    real = auth_mod.allowed

    def counting(globs: Any, *ids: str) -> bool:
        calls.append(ids)
        return real(globs, *ids)

    monkeypatch.setattr(auth_mod, "allowed", counting)
    monkeypatch.setattr(auth_mod, "_USES_MAX", 3)
    p = Principal(key_id="k", models=("openai/*", "fast"))
    for _ in range(2):
        assert p.may_use("fast", "openai/gpt-4o")
        assert p.may_use("openai/gpt-4o", "openai/gpt-4o")
        assert not p.may_use("other/model", "other/model")
    assert len(calls) == 3
    for i in range(5):
        assert p.may_use(f"openai/m{i}", f"openai/m{i}")
        assert len(p._uses) <= 3
    with pytest.raises(PermissionDenied):
        p.check_model("other/model", "other/model")
    assert Principal(key_id="k", models=("a/*",)) == Principal(key_id="k", models=("a/*",))
    assert "_uses" not in repr(p)
    assert Principal(key_id="all").may_use("x", "y")  # no globs: every route
