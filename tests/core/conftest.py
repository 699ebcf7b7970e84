"""Fixtures: a fake OpenAI upstream on port 0 and gateways built from configs made in the test."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.core.support import base_config, build
from tests.fakes import FakeOpenAI

MakeGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


@pytest.fixture
def make_gateway(aiohttp_client: Any) -> MakeGateway:
    """`await make_gateway(cfg_dict_or_GatewayConfig)` → an aiohttp TestClient on the app."""

    async def make(cfg: dict[str, Any] | GatewayConfig) -> TestClient[Any, Any]:
        config = cfg if isinstance(cfg, GatewayConfig) else build(cfg)
        return await aiohttp_client(create_app(config))

    return make


@pytest.fixture
async def gw(fake: FakeOpenAI, make_gateway: MakeGateway) -> TestClient[Any, Any]:
    """The gateway over `base_config` with its provider `fakeai` pointing at `fake`."""
    return await make_gateway(base_config(fake.base_url))
