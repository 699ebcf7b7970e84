"""Provider wire formats. `get_adapter(name)` returns the adapter for a provider's `adapter:`."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.base import Adapter

_MODULES = {"openai": "adapters.openai", "mock": "adapters.mock", "azure": "adapters.azure",
            "anthropic": "adapters.anthropic", "gemini": "adapters.gemini"}


def get_adapter(name: str) -> "Adapter":
    return importlib.import_module(_MODULES[name]).ADAPTER  # type: ignore[no-any-return]
