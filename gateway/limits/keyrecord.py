"""Dynamic API key records: fields, validation and secrets.

A key is stored by the SHA-256 hex digest of its secret, never the secret. `expires_at` is
unix seconds (an integer, UTC); ISO 8601 strings ("2026-12-31T00:00:00Z") are accepted on
input and converted. Secrets look like "my-" + 40 URL-safe characters.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from gateway.errors import InvalidRequest
from gateway.limits.spec import PERIODS, LimitCheck, QuotaCheck
from gateway.types import dumps, loads

SECRET_PREFIX = "my-"
_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
EDITABLE = ("team", "models", "limits", "quota", "expires_at", "metadata")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(30)  # 30 bytes → 40 characters


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class KeyRecord:
    id: str
    digest: str = field(repr=False)
    team: str | None = None
    models: list[str] | None = None  # glob patterns; None = every route
    limits: dict[str, int | None] = field(default_factory=lambda: {"rpm": None, "tpm": None})
    quota: dict[str, Any] | None = None  # {tokens, usd, period}
    expires_at: int | None = None  # unix seconds
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    revoked: bool = False

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """The admin API's key object (no secret, no digest)."""
        return {"id": self.id, "object": "api_key", "team": self.team, "models": self.models,
                "limits": dict(self.limits), "quota": dict(self.quota) if self.quota else None,
                "expires_at": self.expires_at, "metadata": self.metadata,
                "created_at": self.created_at, "revoked": self.revoked}

    def limit_check(self) -> LimitCheck:
        return LimitCheck("key", self.id, self.limits.get("rpm"), self.limits.get("tpm"))

    def quota_check(self) -> QuotaCheck | None:
        q = self.quota
        if not q:
            return None
        return QuotaCheck("key", self.id, q.get("tokens"), q.get("usd"), q.get("period", "month"))

    def to_json(self) -> bytes:
        d = self.public()
        d.pop("object")
        d["digest"] = self.digest
        return dumps(d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "KeyRecord":
        d = loads(raw)
        return cls(id=d["id"], digest=d["digest"], team=d.get("team"), models=d.get("models"),
                   limits=d.get("limits") or {"rpm": None, "tpm": None}, quota=d.get("quota"),
                   expires_at=d.get("expires_at"), metadata=d.get("metadata") or {},
                   created_at=int(d.get("created_at") or 0), revoked=bool(d.get("revoked")))


# ---------------------------------------------------------------- validation


def _bad(param: str, msg: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {msg}", param=param)


def _opt_int(v: Any, param: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(param, "must be a non-negative integer or null")
    return v


def parse_expiry(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        try:
            when = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _bad("expires_at", "must be unix seconds or an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp())
    raise _bad("expires_at", "must be unix seconds or an ISO 8601 time")


def _field(name: str, v: Any) -> Any:
    if name == "team":
        if v is not None and (not isinstance(v, str) or not v):
            raise _bad("team", "must be a non-empty string or null")
        return v
    if name == "models":
        if v is not None and (not isinstance(v, list) or not all(isinstance(m, str) for m in v)):
            raise _bad("models", "must be a list of glob strings or null")
        return v
    if name == "limits":
        v = v or {}
        if not isinstance(v, Mapping) or set(v) - {"rpm", "tpm"}:
            raise _bad("limits", "must be an object with rpm and/or tpm")
        return {k: _opt_int(v.get(k), f"limits.{k}") for k in ("rpm", "tpm")}
    if name == "quota":
        return _quota(v)
    if name == "expires_at":
        return parse_expiry(v)
    if name == "metadata":
        if v is not None and not isinstance(v, Mapping):
            raise _bad("metadata", "must be an object")
        return dict(v or {})
    raise _bad(name, "unknown field")


def _quota(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping) or set(v) - {"tokens", "usd", "period"}:
        raise _bad("quota", "must be an object with tokens, usd and period")
    usd = v.get("usd")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd < 0):
        raise _bad("quota.usd", "must be a non-negative number or null")
    period = v.get("period", "month")
    if period not in PERIODS:
        raise _bad("quota.period", f"must be one of {', '.join(PERIODS)}")
    return {"tokens": _opt_int(v.get("tokens"), "quota.tokens"),
            "usd": float(usd) if usd is not None else None, "period": period}


def validate_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check a PATCH body: only editable fields, each well-formed."""
    if not isinstance(changes, Mapping):
        raise InvalidRequest("body must be a JSON object")
    return {k: _field(k, v) for k, v in changes.items()}


def new_record(body: Mapping[str, Any], now: float) -> tuple[KeyRecord, str]:
    """Validate a create body; return the record and its secret (to show once)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be a JSON object")
    key_id = body.get("id") or f"key-{secrets.token_hex(6)}"
    if not isinstance(key_id, str) or not _ID.match(key_id):
        raise _bad("id", "must be 1-64 characters of letters, digits and . _ : @ -")
    fields = validate_changes({k: v for k, v in body.items() if k != "id"})
    secret = new_secret()
    rec = KeyRecord(id=key_id, digest=digest_of(secret), created_at=int(now), **fields)
    return rec, secret
