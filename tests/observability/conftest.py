"""Two fake OpenAI upstreams and a gateway (create_app) over them."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import yaml

from gateway.app import create_app
from gateway.config import parse_config
from tests.fakes import FakeOpenAI
from tests.observability.support import config

MakeGateway = Callable[..., Awaitable[Any]]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI() as one, FakeOpenAI() as two:
        yield one, two


@pytest.fixture
def make_gateway(aiohttp_client: Any, fakes: tuple[FakeOpenAI, FakeOpenAI]) -> MakeGateway:
    """`await make_gateway(**config_overrides)` -> TestClient over `config(...)`."""

    async def make(config_path: Any = None, **kw: Any) -> Any:
        one, two = fakes
        cfg = parse_config(yaml.safe_dump(config(one.base_url, two.base_url, **kw)), env={})
        return await aiohttp_client(create_app(cfg, config_path))

    return make
