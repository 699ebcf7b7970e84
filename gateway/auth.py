"""Bearer key → SHA-256 → `Principal` (key id, team, allowed models, limits, quota).

Keys are only ever held as SHA-256 digests: static keys from the config (`key` is hashed at load,
or given as `key_sha256`), dynamic keys in the key store. The master key's digest is compared with
`hmac.compare_digest`; a digest is never logged.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from gateway.config.schema import AuthConfig, Limits, Quota
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.routing import allowed


_USES_MAX = 1024  # remembered model answers per principal
_KNOWN_MAX = 4096  # remembered presented keys per authenticator


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    team: str = ""
    models: tuple[str, ...] | None = None  # globs; None: every route
    limits: Limits | None = None
    quota: Quota | None = None
    is_master: bool = False
    expires_at: float | None = None  # unix seconds
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # (sent id, route id) -> may use: the globs are fixed, so each answer is worked out once
    _uses: dict[tuple[str, str], bool] = field(default_factory=dict, init=False, repr=False,
                                               compare=False)

    def may_use(self, sent_id: str, route_id: str) -> bool:
        if self.models is None or self.is_master:
            return True
        uses = self._uses
        ok = uses.get((sent_id, route_id))
        if ok is None:
            ok = allowed(self.models, sent_id, route_id)
            if len(uses) >= _USES_MAX:
                uses.clear()
            uses[(sent_id, route_id)] = ok
        return ok

    def check_model(self, sent_id: str, route_id: str) -> None:
        if not self.may_use(sent_id, route_id):
            raise PermissionDenied(f"this API key may not use model '{sent_id}'", param="model")


MASTER = Principal(key_id="master", is_master=True)


def digest(secret: str) -> str:
    # surrogateescape: a presented key with bytes that are not UTF-8 is hashed as sent (and
    # matches no key: 401), never a 500
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def parse_expiry(value: Any) -> float | None:
    """ISO 8601 (a trailing Z or an offset; naive means UTC) or unix seconds → unix seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)  # unix seconds written as a string (YAML numbers become strings)
    except ValueError:
        pass
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization")
    if value:
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if token and scheme.lower() == "bearer":
            return token
        return None
    return headers.get("x-api-key") or None


DynamicLookup = Callable[[str], Awaitable["Principal | None"]]


class Authenticator:
    """Presented key → `Principal`. The SHA-256 of a key that authenticated is remembered (a
    bounded map from the presented key): a static or master key maps straight to its principal
    (fixed for this config generation; a reload builds a new `Authenticator`), a dynamic key to
    its digest only, so the key store is still asked on every request and a revoked or changed
    key takes effect as fast as without the map. Keys that fail are never remembered."""

    def __init__(self, cfg: AuthConfig, dynamic: DynamicLookup | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self._clock = clock or time.time
        self._master = digest(cfg.master_key) if cfg.master_key else None
        self._static: dict[str, Principal] = {}
        for k in cfg.keys:
            d = (k.key_sha256 or "").lower() or digest(k.key or "")
            self._static[d] = Principal(key_id=k.id, team=k.team, models=k.models, limits=k.limits,
                                        quota=k.quota, expires_at=parse_expiry(k.expires_at),
                                        metadata=dict(k.metadata))
        self.dynamic = dynamic
        self._known: dict[str, Principal | str] = {}  # presented key -> principal | digest

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        secret = bearer(headers)
        if not secret:
            raise AuthenticationFailed("no API key: send 'Authorization: Bearer <key>'")
        known = self._known.get(secret)
        if known is None:
            principal = await self._lookup(secret)
        elif known.__class__ is str:  # a dynamic key: ask the key store every time
            found = await self.dynamic(known) if self.dynamic is not None else None
            if found is None:
                self._known.pop(secret, None)
                raise AuthenticationFailed("invalid API key")
            principal = found
        else:
            principal = known  # type: ignore[assignment]
        if principal.expires_at is not None and principal.expires_at <= self._clock():
            raise AuthenticationFailed("this API key has expired", code="expired_api_key")
        return principal

    async def _lookup(self, secret: str) -> Principal:
        d = digest(secret)
        if self._master is not None and hmac.compare_digest(d, self._master):
            self._remember(secret, MASTER)
            return MASTER
        principal = self._static.get(d)
        if principal is not None:
            self._remember(secret, principal)
            return principal
        if self.dynamic is not None:
            principal = await self.dynamic(d)
        if principal is None:
            raise AuthenticationFailed("invalid API key")
        self._remember(secret, d)
        return principal

    def _remember(self, secret: str, value: Principal | str) -> None:
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[secret] = value

    def master(self, principal: Principal) -> None:
        if not principal.is_master:
            raise PermissionDenied("this endpoint needs the master key", code="master_key_required")
