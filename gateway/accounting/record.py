"""The usage record: one per client request, whatever happened to it."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    ts: float  # unix seconds (UTC) when the request arrived
    key_id: str = ""
    team: str = ""
    user: str = ""  # the request's `user` field
    model: str = ""  # route model ID the client sent (or the fallback route that answered)
    provider: str = ""  # config provider name that answered last ("" when none was called)
    upstream_model: str = ""
    attempts: int = 0
    fallback: str = ""  # the route model that answered instead, if a fallback was used
    stream: bool = False
    endpoint: str = "chat"  # chat | embeddings
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True  # False when the route has no price (cost recorded as 0)
    status: int = 0  # HTTP status sent to the client
    error_type: str = ""  # error `code` when status >= 400, else ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    # a stream or request not completed: "" | "client_disconnected" (499, or the status of a
    # stream's head) | "upstream_cut" | "shutdown" (the shutdown grace period ran out: 503
    # `gateway_shutdown`, or the stream's status with error_type "gateway_shutdown")
    cut: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (by hand: `dataclasses.asdict` deep-copies and costs ~10x more)."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UsageRecord":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


_FIELDS = tuple(f.name for f in fields(UsageRecord))
