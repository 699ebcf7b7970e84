"""A reload keeps a provider's pooled connections unless its endpoint changed."""
from __future__ import annotations

from gateway.types import ProviderSpec
from gateway.upstream import Upstream


async def test_only_a_changed_endpoint_retires_the_connection_pool() -> None:
    a = ProviderSpec(name="a", adapter="openai", base_url="http://127.0.0.1:1/v1", api_key="k1")
    b = ProviderSpec(name="b", adapter="openai", base_url="http://127.0.0.1:2/v1", api_key="k2")
    up = Upstream({"a": a, "b": b})
    await up.start()
    try:
        before = dict(up._clients)
        new_a = ProviderSpec(name="a", adapter="openai", base_url=a.base_url, api_key="rotated",
                             headers={"X-New": "1"})
        new_b = ProviderSpec(name="b", adapter="openai", base_url="http://127.0.0.1:3/v1")
        retired = up.update({"a": new_a, "b": new_b})
        assert retired == [before["b"]]  # b moved; a only rotated its key
        assert up._clients == {"a": before["a"]}
        assert up.update({}) == [before["a"]]  # a provider removed by the reload
    finally:
        for s in before.values():
            await s.close()
