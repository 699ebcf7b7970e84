"""Prices (USD per million tokens) and the cost of one request.

Token semantics follow OpenAI's usage object: `prompt` counts every input token and `cached` is
the part of it served from the provider's prompt cache (adapters normalise Anthropic and Gemini
to this). Cached tokens are billed at `cached_input`, the rest of the prompt at `input`,
completion tokens (reasoning included) at `output`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

log = logging.getLogger(__name__)

PER_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. `cached_input` defaults to `input` when not given."""

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        if self.cached_input is None:
            object.__setattr__(self, "cached_input", self.input)

    @property
    def cached(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


def cost_usd(price: Price | None, prompt: int, completion: int, cached: int = 0) -> tuple[float, bool]:
    """Cost of one request: `(usd, priced)`; `(0.0, False)` when the route has no price."""
    if price is None:
        return 0.0, False
    prompt = max(0, int(prompt))
    cached = min(max(0, int(cached)), prompt)
    completion = max(0, int(completion))
    usd = ((prompt - cached) * price.input + cached * price.cached
           + completion * price.output) / PER_MILLION
    return usd, True


class PriceError(ValueError):
    """A price table or route price is invalid; `problems` lists each one with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _number(value: Any, path: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        problems.append(f"{path}: must be a number >= 0, got {value!r}")
        return None
    return float(value)


def parse_price(spec: Any, path: str = "price") -> tuple[Price | None, list[str]]:
    """Decode `{input, output, cached_input?}`; returns the price (or None) and the problems."""
    problems: list[str] = []
    if not isinstance(spec, Mapping):
        return None, [f"{path}: must be a mapping with input and output, got {type(spec).__name__}"]
    for name in spec:
        if name not in ("input", "output", "cached_input"):
            problems.append(f"{path}.{name}: unknown field (expected input, output, cached_input)")
    values: dict[str, float | None] = {}
    for name in ("input", "output"):
        if name not in spec:
            problems.append(f"{path}.{name}: required")
        else:
            values[name] = _number(spec[name], f"{path}.{name}", problems)
    cached = spec.get("cached_input")
    cached_value = None if cached is None else _number(cached, f"{path}.cached_input", problems)
    if problems or values.get("input") is None or values.get("output") is None:
        return None, problems
    return Price(values["input"] or 0.0, values["output"] or 0.0, cached_value), []


def parse_prices(data: Any, source: str = "prices") -> tuple[dict[str, Price], list[str]]:
    """Decode a price table `{model_name: {input, output, cached_input?}}`."""
    if data is None:
        return {}, []
    if not isinstance(data, Mapping):
        return {}, [f"{source}: must be a mapping of model name to price"]
    table: dict[str, Price] = {}
    problems: list[str] = []
    for name, spec in data.items():
        price, errs = parse_price(spec, f'{source}."{name}"')
        problems.extend(errs)
        if price is not None:
            table[str(name)] = price
    return table, problems


def load_prices(path: str | Path) -> dict[str, Price]:
    """Load a price table file (e.g. config/prices.yaml). Raises PriceError listing every problem."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise PriceError([f"{p}: invalid YAML: {exc}"]) from exc
    table, problems = parse_prices(data, p.name)
    if problems:
        raise PriceError(problems)
    return table


def lookup_price(table: Mapping[str, Price], model: str) -> Price | None:
    """Find a model's price: the exact name, else the one entry whose name after `vendor/`
    equals the model's (so `gpt-4o` and `azure/gpt-4o` find `openai/gpt-4o`)."""
    if model in table:
        return table[model]
    bare = model.split("/", 1)[-1]
    matches = [price for name, price in table.items()
               if name.endswith("/" + model) or name.split("/", 1)[-1] == bare]
    return matches[0] if len(matches) == 1 else None


def resolve_price(spec: Any, table: Mapping[str, Price], path: str = "price") -> tuple[Price | None, list[str]]:
    """A route's `price:`: a mapping, or the name of an entry of the shipped table, or absent."""
    if spec is None:
        return None, []
    if isinstance(spec, str):
        price = lookup_price(table, spec)
        if price is None:
            return None, [f"{path}: no price named {spec!r} in the price table"]
        return price, []
    return parse_price(spec, path)
