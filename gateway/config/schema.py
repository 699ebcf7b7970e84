"""The configuration's typed shape (see the README's configuration reference).

Each dataclass is frozen; `problems()` returns field-level checks beyond types ("weight: must be
greater than 0"), reported with their path by the decoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.accounting.cost import Price

ADAPTERS = ("openai", "anthropic", "gemini", "azure", "mock")


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None

    def problems(self) -> list[str]:
        return [f"{n}: must be a positive integer" for n in ("rpm", "tpm")
                if getattr(self, n) is not None and getattr(self, n) <= 0]


@dataclass(frozen=True)
class Quota:
    tokens: int | None = None
    usd: float | None = None
    period: Literal["day", "month", "total"] = "month"

    def problems(self) -> list[str]:
        out = []
        if self.tokens is not None and self.tokens <= 0:
            out.append("tokens: must be a positive integer")
        if self.usd is not None and self.usd <= 0:
            out.append("usd: must be greater than 0")
        return out


@dataclass(frozen=True)
class Retries:
    attempts: int = 3
    backoff_s: float = 0.25
    backoff_max_s: float = 8.0

    def problems(self) -> list[str]:
        out = []
        if self.attempts < 1:
            out.append("attempts: must be at least 1 (the first try counts)")
        if self.backoff_s < 0 or self.backoff_max_s < 0:
            out.append("backoff_s: must not be negative")
        return out


@dataclass(frozen=True)
class Timeouts:
    connect_s: float | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    idle_s: float | None = None  # longest silence inside a stream after its first byte

    def problems(self) -> list[str]:
        return [f"{n}: must be greater than 0" for n in ("connect_s", "first_token_s", "total_s",
                                                          "idle_s")
                if getattr(self, n) is not None and getattr(self, n) <= 0]


@dataclass(frozen=True)
class Cooldown:
    failures: int = 3  # failures within window_s that take a target out of rotation
    window_s: float = 60.0
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_mb: float = 20.0
    metrics_port: int | None = None
    metrics_host: str = ""  # where metrics_port listens; empty: like host (a sidecar: 0.0.0.0)
    shutdown_grace_s: float = 30.0
    workers: int = 1

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.port <= 65535:
            out.append("port: must be 0-65535")
        if self.max_body_mb <= 0:
            out.append("max_body_mb: must be greater than 0")
        return out


@dataclass(frozen=True)
class StateConfig:
    redis_url: str = ""
    on_redis_error: Literal["open", "closed"] = "open"
    redis_budget_ms: float = 50.0


@dataclass(frozen=True)
class KeyConfig:
    id: str
    key: str | None = field(default=None, repr=False)
    key_sha256: str | None = None
    team: str = ""
    models: tuple[str, ...] | None = None
    limits: Limits | None = None
    quota: Quota | None = None
    expires_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if bool(self.key) == bool(self.key_sha256):
            out.append("key: give exactly one of key or key_sha256")
        elif self.key_sha256 and not _is_sha256(self.key_sha256):
            out.append("key_sha256: must be a 64-character hex SHA-256 digest")
        if self.expires_at and not _is_time(self.expires_at):
            out.append("expires_at: must be an ISO 8601 time (2030-01-31T00:00:00Z) or unix "
                       "seconds")
        return out


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _is_time(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        pass
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthConfig:
    master_key: str = field(default="", repr=False)
    keys: tuple[KeyConfig, ...] = ()


@dataclass(frozen=True)
class TeamConfig:
    limits: Limits | None = None
    quota: Quota | None = None


@dataclass(frozen=True)
class ProviderConfig:
    adapter: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    api_version: str = ""
    auth_header: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    limits: Limits | None = None
    timeout_s: float | None = None  # shorthand for timeouts.total_s
    timeouts: Timeouts | None = None
    retries: Retries | None = None
    unsupported_params: tuple[str, ...] = ()
    key_required: bool = True  # False for keyless local servers (vLLM, Ollama)
    options: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        if self.adapter is not None and self.adapter not in ADAPTERS:
            return [f"adapter: unknown adapter {self.adapter!r} (known: {', '.join(ADAPTERS)})"]
        return []


@dataclass(frozen=True)
class TargetConfig:
    provider: str
    model: str = ""
    weight: float = 1.0

    def problems(self) -> list[str]:
        return ["weight: must be greater than 0"] if self.weight <= 0 else []


@dataclass(frozen=True)
class RouteConfig:
    alias: str | None = None
    targets: tuple[TargetConfig, ...] = ()
    fallbacks: tuple[str, ...] = ()
    context_fallbacks: tuple[str, ...] = ()
    price: Price | str | None = None  # a Price, a prices-table name, or "auto" (by model ID)
    limits: Limits | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # a wildcard route's models listed in /v1/models
    strategy: Literal["weighted", "least_inflight", "latency"] = "weighted"
    retries: Retries | None = None
    timeouts: Timeouts | None = None
    drop_unsupported: bool = False
    trace_prompts: bool = False  # traces may keep prompt text

    def problems(self) -> list[str]:
        if self.alias is not None:
            extra = [n for n in ("targets", "fallbacks", "price", "limits", "models")
                     if getattr(self, n)]
            return [f"{n}: an alias route takes only `alias`" for n in extra]
        if not self.targets:
            return ["targets: a route needs at least one target (or `alias`)"]
        return []


@dataclass(frozen=True)
class UsageConfig:
    jsonl_path: str = ""  # JSON-lines file sink; empty: none
    buffer: int = 10000
    stream_maxlen: int = 1_000_000
    # how long Redis remembers a written record's id, so that a batch written again (its reply
    # lost, then retried) is counted once; one small key per request for this long
    dedup_window_s: int = 3600

    def problems(self) -> list[str]:
        out = [f"{n}: must be a positive integer" for n in ("buffer", "stream_maxlen")
               if getattr(self, n) <= 0]
        if self.dedup_window_s < 60:
            out.append("dedup_window_s: must be at least 60 (seconds)")
        return out


@dataclass(frozen=True)
class TracesConfig:
    ttl_s: float = 3600.0
    max_entries: int = 10000


@dataclass(frozen=True)
class MetricsConfig:
    max_models: int = 200  # distinct wildcard model label values before `other`


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


@dataclass(frozen=True)
class OtelConfig:
    endpoint: str = ""  # OTLP/HTTP traces endpoint; empty: tracing off
    service_name: str = "modelyard"


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    state: StateConfig = field(default_factory=StateConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    teams: dict[str, TeamConfig] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    default_model: str = ""
    prices_file: str = ""  # relative to the config file; empty: the shipped config/prices.yaml
    prices: dict[str, Price] = field(default_factory=dict)  # inline entries, over the file's
    retries: Retries = field(default_factory=Retries)
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(5.0, 60.0, 600.0, 60.0))
    cooldown: Cooldown = field(default_factory=Cooldown)
    usage: UsageConfig = field(default_factory=UsageConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    otel: OtelConfig = field(default_factory=OtelConfig)
