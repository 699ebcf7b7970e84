"""Redis clients from a URL: standalone, TLS (`rediss://`) or Redis Cluster.

Cluster is selected by the scheme `redis+cluster://` / `rediss+cluster://` or by the query
parameter `?cluster=1` (`true`/`yes` too) on a `redis://` or `rediss://` URL; the URL then
names any one node (the client discovers the rest). `rediss://` is redis-py's TLS as is
(`ssl_cert_reqs`, `ssl_ca_certs`, ... as query parameters).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient = Redis | RedisCluster


def split_cluster_url(url: str) -> tuple[str, bool]:
    """Return the URL redis-py understands and whether it names a cluster."""
    parts = urlsplit(url)
    scheme, cluster = parts.scheme, False
    if scheme.endswith("+cluster"):
        scheme, cluster = scheme[: -len("+cluster")], True
    query = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "cluster":
            cluster = cluster or v.lower() in ("1", "true", "yes", "")
        else:
            query.append((k, v))
    # built by hand: urlunsplit drops the `//` of schemes it does not know (unix:///path)
    rest = f"?{urlencode(query)}" if query else ""
    return f"{scheme}://{parts.netloc}{parts.path}{rest}", cluster


def redact(url: str) -> str:
    """The URL without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def connect(url: str, *, socket_timeout_s: float = 2.0, **kw: Any) -> tuple[RedisClient, bool]:
    """A client (no I/O yet) and whether it is a cluster client."""
    plain, cluster = split_cluster_url(url)
    opts: dict[str, Any] = {"socket_timeout": socket_timeout_s,
                            "socket_connect_timeout": socket_timeout_s, **kw}
    if cluster:
        return RedisCluster.from_url(plain, **opts), True
    return Redis.from_url(plain, health_check_interval=30, **opts), False
