"""Imports point one way only (DESIGN.md, Layers): a short test keeps it so.

types/errors at the bottom (stdlib + orjson), adapters above them (no core, no I/O libraries),
the core above that; only gateway/http/, gateway/app.py, gateway/serve.py and the stand-alone
fake providers in gateway/mockserver/ touch aiohttp.web.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def modules(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def test_bottom_layer_imports_only_stdlib_and_orjson() -> None:
    for rel in ("gateway/types.py", "gateway/errors.py"):
        for name in imports(ROOT / rel):
            top = name.split(".")[0]
            assert top in STDLIB or top == "orjson" or name.startswith(("gateway.types",
                                                                         "gateway.errors")), \
                f"{rel} imports {name}"


def test_adapters_import_only_the_bottom_layer() -> None:
    allowed = ("gateway.types", "gateway.errors", "adapters")
    for path in modules("adapters"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top in STDLIB or name.startswith(allowed), \
                f"{path.relative_to(ROOT)} imports {name}: adapters do no I/O and know no core"


def test_only_the_http_edge_touches_aiohttp_web() -> None:
    edge = {ROOT / "gateway/app.py", ROOT / "gateway/serve.py"}
    for path in modules("gateway"):
        if path in edge or "http" in path.parts or "mockserver" in path.parts:
            continue
        bad = {n for n in imports(path) if n.startswith("aiohttp.web") or n == "aiohttp.web"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_layer_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from aiohttp import web\nimport gateway.pipeline\n")
    assert {"aiohttp.web", "gateway.pipeline"} <= imports(bad)
