"""Admin and per-key endpoints: /admin/keys, /admin/usage, /v1/key, /v1/traces/{id}."""
from __future__ import annotations

from aiohttp import web


def add_routes(r: web.UrlDispatcher) -> None:
    return None
