"""Canonical data shapes shared by the core and the adapters.

The gateway speaks OpenAI Chat Completions at its edge, so the canonical request and response
*are* OpenAI-shaped: a request keeps the client's decoded JSON body (so an OpenAI-compatible
upstream gets every field it sent, known or not), and adapters translate from and to that shape.
Typed accessors and TypedDicts describe the parts the gateway reads; nothing here does I/O.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NotRequired, TypedDict

import orjson

JSON = dict[str, Any]

# ---------------------------------------------------------------- OpenAI wire shapes (read-only views)


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: NotRequired[str | list[JSON] | None]
    name: NotRequired[str]
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]


def dumps(obj: Any) -> bytes:
    """The one JSON encoder of the project (orjson: ~10x the standard library)."""
    return orjson.dumps(obj)


_INT64 = (-(2 ** 63), 2 ** 64 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps_lenient(obj: Any, default: Any = None) -> bytes:
    """`dumps` for what must never be lost to one odd value (log lines, usage records): when
    orjson refuses something (an int beyond 64 bits, a string with a lone surrogate, which is
    what header bytes that are not UTF-8 decode to), that value is made encodable instead."""
    try:
        return orjson.dumps(obj, default=default)
    except TypeError:
        return orjson.dumps(_encodable(obj), default=default)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)  # lone surrogates: U+FFFD each
    if isinstance(value, int) and not isinstance(value, bool) \
            and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    if isinstance(value, dict):
        return {_encodable(str(k)): _encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_encodable(v) for v in (sorted(value, key=str)
                                        if isinstance(value, (set, frozenset)) else value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encodable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


loads = orjson.loads


# ---------------------------------------------------------------- requests


@dataclass(slots=True)
class ChatRequest:
    """A validated client request. `body` is the client's JSON with gateway-only fields removed."""

    body: JSON
    model: str  # the ID the client sent (or default_model)
    stream: bool = False

    @property
    def messages(self) -> list[Message]:
        return self.body["messages"]  # type: ignore[no-any-return]

    @property
    def include_usage(self) -> bool:
        """Did the client ask for the usage chunk at the end of a stream?"""
        opts = self.body.get("stream_options")
        return bool(opts and opts.get("include_usage"))

    @property
    def max_tokens(self) -> int | None:
        b = self.body
        value = b.get("max_completion_tokens")
        if value is None:
            value = b.get("max_tokens")
        return value  # type: ignore[no-any-return]

    def param(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default)


@dataclass(slots=True)
class EmbeddingsRequest:
    body: JSON
    model: str

    @property
    def inputs(self) -> list[Any]:
        value = self.body["input"]
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return [value]
        return list(value)


# ---------------------------------------------------------------- usage and responses


MAX_TOKENS = 2**53 - 1  # exact as a double (Lua, JSON readers) and within 64-bit integers


def token_count(v: Any) -> int:
    """A provider-reported token count as a sane int: numbers (ints, finite floats, numeric
    strings) clamped to 0..MAX_TOKENS, anything else 0. A provider reporting garbage must neither
    fail the request nor make its usage record one that a store cannot take."""
    if v.__class__ is int:  # the common case
        return v if 0 <= v <= MAX_TOKENS else (0 if v < 0 else MAX_TOKENS)
    if v is None or isinstance(v, bool):
        return 0
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return 0
    if f != f:  # NaN
        return 0
    return int(min(max(f, 0.0), float(MAX_TOKENS)))


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (completion includes reasoning tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> JSON:
        out: JSON = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_openai(cls, u: Mapping[str, Any] | None) -> "Usage | None":
        if not u or (u.__class__ is not dict and not isinstance(u, Mapping)):
            return None  # (`__class__ is dict` first: an ABC check costs more than the rest)
        ptd = u.get("prompt_tokens_details") or {}
        ctd = u.get("completion_tokens_details") or {}
        if ptd.__class__ is not dict and not isinstance(ptd, Mapping):
            ptd = {}
        if ctd.__class__ is not dict and not isinstance(ctd, Mapping):
            ctd = {}
        return cls(
            prompt_tokens=token_count(u.get("prompt_tokens")),
            completion_tokens=token_count(u.get("completion_tokens")),
            cached_tokens=token_count(ptd.get("cached_tokens")),
            reasoning_tokens=token_count(ctd.get("reasoning_tokens")),
        )


@dataclass(slots=True)
class ChatResponse:
    """An OpenAI `chat.completion` body (model/id stamped by the encoder) plus parsed usage."""

    body: JSON
    usage: Usage | None = None


@dataclass(slots=True)
class EmbeddingsResponse:
    body: JSON  # OpenAI embeddings list shape
    usage: Usage | None = None


@dataclass(slots=True)
class StreamEvent:
    """One canonical stream event.

    `chunk` is an OpenAI `chat.completion.chunk` body; `id`, `created`, `object` and `model` may be
    missing (the encoder stamps them). A chunk whose only job is to carry usage (`choices: []`)
    sets `usage_only` so that the encoder can strip it when the client did not ask for usage.
    """

    chunk: JSON
    usage: Usage | None = None
    usage_only: bool = False
    # Passthrough fast path: the upstream's own chunk text, sent as is but for its model field
    # (`raw_model`, the exact `"model":"..."` text to replace). `chunk` is then empty.
    raw: str | None = None
    raw_model: str = ""

    def as_chunk(self) -> JSON:
        """The chunk as a dict, also for a passthrough event (parsed here, for tests and tools)."""
        return self.chunk if self.raw is None else orjson.loads(self.raw)


# ---------------------------------------------------------------- upstream I/O shapes


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    stream: bool = False


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


# ---------------------------------------------------------------- routing targets (resolved config)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One upstream account, as the config describes it (secrets included: never log this)."""

    name: str
    adapter: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    api_version: str = ""
    auth_header: str = ""  # e.g. "api-key"; empty: the adapter's default
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    unsupported_params: frozenset[str] = frozenset()  # OpenAI-compatible vendors' rejected fields
    key_required: bool = False  # an empty api_key means the account is not configured yet
    options: Mapping[str, Any] = field(default_factory=dict)  # adapter-specific knobs


@dataclass(frozen=True, slots=True)
class Target:
    """A provider and the upstream model name to send, plus route-level request policy."""

    provider: ProviderSpec
    model: str
    weight: float = 1.0
    defaults: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"max_tokens": 4096}
    drop_unsupported: bool = False

    @property
    def key(self) -> str:
        """Stable identity for cooldowns and load-balancing state."""
        return f"{self.provider.name}/{self.model}"
