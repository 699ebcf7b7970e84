"""`modelyard mock-provider`: run one flavor's fake upstream until interrupted."""
from __future__ import annotations

import importlib
import logging

from aiohttp import web

log = logging.getLogger(__name__)


def run_mock(flavor: str, host: str, port: int, *, latency_ms: float, fail_rate: float,
             chunk_words: int) -> int:
    module = importlib.import_module(f"gateway.mockserver.{flavor}")
    app = module.create_app(latency_ms=latency_ms, fail_rate=fail_rate, chunk_words=chunk_words)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(app, host=host, port=port, access_log=None, print=None)
    return 0
