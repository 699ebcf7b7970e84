"""The Lua scripts, read once from the package's `.lua` files (headers document each contract)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


def read_script(name: str) -> str:
    return resources.files("gateway.limits").joinpath(f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class ScriptSources:
    acquire: str
    reconcile: str
    cooldown: str

    @classmethod
    def load(cls) -> "ScriptSources":
        return cls(read_script("acquire"), read_script("reconcile"), read_script("cooldown"))
