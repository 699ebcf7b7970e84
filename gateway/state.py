"""Shared state resources (limits backend, key store, usage sink, traces) for `create_app`."""
from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web


async def state_resources(app: web.Application) -> AsyncIterator[None]:
    yield
