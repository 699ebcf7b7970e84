"""Typed application keys."""
from __future__ import annotations

from typing import Any

from aiohttp import web

RESOURCES: web.AppKey[Any] = web.AppKey("resources", object)
STATE: web.AppKey[Any] = web.AppKey("state", object)  # lifecycle flags (ready, draining)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)  # echoed in x-request-id
RECORD_ID: web.RequestKey[str] = web.RequestKey("record_id", str)  # the gateway's own, unique
