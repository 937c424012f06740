"""Rules of the package's layout that a reader relies on: typed, module loggers, no private imports."""

from __future__ import annotations

import ast
import importlib.resources
from pathlib import Path

import pytest

import dream_plugin

ROOT = Path(dream_plugin.__file__).parent
REPO = ROOT.parent
SOURCES = sorted([*ROOT.rglob("*.py"), *(REPO / "adapters").rglob("*.py")])


def test_the_package_ships_its_type_hints():
    tomllib = pytest.importorskip("tomllib")
    assert importlib.resources.files("dream_plugin").joinpath("py.typed").is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["dream_plugin"]


def _imported_private_names(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(("dream_plugin", "adapters"))):
            found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    assert [hit for p in SOURCES for hit in _imported_private_names(p)] == []


def test_module_loggers_are_named_by_module():
    fixed = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                fixed.append(f"{p.relative_to(REPO)}: getLogger({node.args[0].value!r})")
    assert fixed == []
