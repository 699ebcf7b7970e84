from __future__ import annotations

from pathlib import Path

import pytest

from gateway.accounting.cost import (
    Price, PriceError, cost_usd, load_prices, lookup_price, parse_prices, resolve_price,
)

ROOT = Path(__file__).resolve().parents[2]


def test_cost_splits_cached_prompt_tokens() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    usd, priced = cost_usd(price, prompt=1000, completion=500, cached=400)
    assert priced is True
    assert usd == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)


def test_cached_input_defaults_to_input() -> None:
    price = Price(input=3.0, output=15.0)
    assert price.cached_input == 3.0
    assert cost_usd(price, 1000, 0, 1000)[0] == pytest.approx(cost_usd(price, 1000, 0, 0)[0])


def test_no_price_is_zero_and_unpriced() -> None:
    assert cost_usd(None, 1000, 1000, 10) == (0.0, False)


def test_cached_is_clamped_to_the_prompt() -> None:
    price = Price(1.0, 1.0, 0.0)
    assert cost_usd(price, 100, 0, 500)[0] == 0.0
    assert cost_usd(price, 100, 0, -5)[0] == pytest.approx(100 / 1e6)


def test_shipped_table_loads_and_has_the_common_models() -> None:
    table = load_prices(ROOT / "config" / "prices.yaml")
    for name in ["openai/gpt-4o", "openai/gpt-4o-mini", "openai/gpt-4.1", "openai/gpt-4.1-mini",
                 "openai/o3", "openai/o4-mini", "openai/text-embedding-3-small",
                 "openai/text-embedding-3-large", "anthropic/claude-sonnet-4-5",
                 "anthropic/claude-haiku-4-5", "anthropic/claude-opus-4-1",
                 "google/gemini-2.5-pro", "google/gemini-2.5-flash",
                 "google/gemini-2.5-flash-lite", "google/text-embedding-004",
                 "groq/llama-3.3-70b-versatile", "mistral/mistral-large-latest"]:
        assert name in table, name
    assert table["openai/gpt-4o"] == Price(2.50, 10.00, 1.25)
    assert all(p.cached_input is not None and p.cached_input <= p.input for p in table.values())
    text = (ROOT / "config" / "prices.yaml").read_text()
    assert "CHECK" in text.split("\n\n")[0]  # the header says these are list prices to check


def test_lookup_by_bare_or_other_vendor_name() -> None:
    table = {"openai/gpt-4o": Price(2.5, 10), "groq/meta-llama/llama-4-scout": Price(0.11, 0.34)}
    assert lookup_price(table, "gpt-4o") is table["openai/gpt-4o"]
    assert lookup_price(table, "azure-eu/gpt-4o") is table["openai/gpt-4o"]
    assert lookup_price(table, "meta-llama/llama-4-scout") is table["groq/meta-llama/llama-4-scout"]
    assert lookup_price(table, "gpt-5") is None


def test_every_problem_is_listed_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text('a: {input: -1, output: 2}\nb: {output: x}\nc: {input: 1, output: 1, cache: 2}\n'
                   'd: 5\n')
    with pytest.raises(PriceError) as err:
        load_prices(bad)
    assert err.value.problems == [
        'prices.yaml."a".input: must be a number >= 0, got -1',
        'prices.yaml."b".input: required',
        "prices.yaml.\"b\".output: must be a number >= 0, got 'x'",
        'prices.yaml."c".cache: unknown field (expected input, output, cached_input)',
        'prices.yaml."d": must be a mapping with input and output, got int',
    ]
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")


def test_resolve_route_price() -> None:
    table, problems = parse_prices({"openai/gpt-4o": {"input": 2.5, "output": 10}})
    assert problems == []
    assert resolve_price(None, table) == (None, [])
    assert resolve_price("gpt-4o", table) == (Price(2.5, 10), [])
    assert resolve_price({"input": 1, "output": 2, "cached_input": 0.5}, table) == (Price(1, 2, 0.5), [])
    price, problems = resolve_price("nope", table, 'routes."x".price')
    assert price is None and problems == ["routes.\"x\".price: no price named 'nope' in the price table"]
