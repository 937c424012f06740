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


# --- the tree: a handful of top-level entries, each one role, and every checkout imports itself ---

TOP_LEVEL = {"adapters", "cli", "common", "core", "engine", "harness", "hosts", "strategies"}


def test_the_package_top_level_is_one_entry_per_role_each_with_a_one_line_purpose():
    entries = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    modules = {p.name for p in ROOT.iterdir() if p.suffix == ".py"}
    assert entries == TOP_LEVEL and modules == {"__init__.py"}
    architecture = (REPO / "docs" / "architecture.md").read_text()
    for name in sorted(TOP_LEVEL):
        docstring = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text())) or ""
        assert docstring.strip(), f"dream_plugin/{name}/__init__.py has no docstring"
        assert f"\n  {name}/ " in architecture, f"docs/architecture.md does not list dream_plugin/{name}/ in its tree"


def test_the_adapters_inside_the_package_are_the_top_level_adapters_folder():
    assert (ROOT / "adapters").resolve() == (REPO / "adapters").resolve()


def test_setuptools_discovers_every_package_including_the_adapters():
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in settings and list(settings["packages"]) == ["find"]  # discovered, not a hand list
    include = settings["packages"]["find"]["include"]
    found = set(setuptools.find_packages(str(REPO), include=include))
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in ROOT.rglob("__init__.py")}
    assert found >= folders | {"dream_plugin.adapters"}


PUBLIC_IMPORTS = [
    "from dream_plugin import Selector, SelectionRequest, SelectionResult, SelectionRecord, hookimpl, hookspec",
    "from dream_plugin import Settings, load_settings, ConfigError, PluginError, Strategy",
    "from dream_plugin import build_plugin_manager, get_plugin_manager, __version__",
    "from dream_plugin.adapters import wrap_get_images, wrap_class_loader, wrap_mtt_get_images, make_class_sampler",
    "from dream_plugin.adapters import Adapter, HostLoopSampler, KindSampler, NetworkSource",
    "from dream_plugin.strategies import EmbeddingStrategy, Strategy, DreamStrategy, RandomStrategy",
    "from dream_plugin.cli import main",
]


@pytest.mark.parametrize("line", PUBLIC_IMPORTS)
def test_public_imports_keep_working(line):
    exec(line, {})


def test_every_import_the_docs_show_works():
    import re

    shown = set()
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        shown |= set(re.findall(r"^\s*(from dream_plugin[\w.]* import [\w, ]+)$", doc.read_text(), re.M))
    assert shown
    for line in sorted(shown):
        exec(line, {})


def test_a_second_checkout_imports_only_itself(tmp_path):
    """Run from a copy of the tree, every module comes from the copy, although this one is installed."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "second-checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT, copy / "dream_plugin", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "adapters", copy / "adapters", ignore=ignore)
    probe = ("import importlib, pkgutil, sys, dream_plugin\n"
             "names = [m.name for m in pkgutil.walk_packages(dream_plugin.__path__, 'dream_plugin.') "
             "if not m.name.endswith('__main__')]\n"
             "for n in names: importlib.import_module(n)\n"
             "print('\\n'.join(sorted({getattr(m, '__file__', '') or '' for k, m in sys.modules.items() "
             "if k == 'dream_plugin' or k.startswith('dream_plugin.')})))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    files = [Path(f) for f in out.stdout.split()]
    assert any(f.parent.name == "adapters" for f in files)
    assert len(files) > 80
    outside = [str(f) for f in files if copy not in f.resolve().parents]
    assert outside == []


LAYERS = ["cli", "harness", "adapters", "hosts", "core", "strategies", "engine", "common"]


def _group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "dream_plugin" and len(parts) > 1 and parts[1] in LAYERS else None


def test_groups_import_only_the_groups_below_them():
    """The documented order; strategies may use core's request and config types (one layer, two folders)."""
    upward = []
    for path in SOURCES:
        rel = path.relative_to(REPO).parts
        here = "adapters" if rel[0] == "adapters" else (rel[1] if len(rel) > 2 else None)
        if here is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                there = _group(node.module)
                if there and there != here and LAYERS.index(there) < LAYERS.index(here) \
                        and (here, there) != ("strategies", "core"):
                    upward.append(f"{'/'.join(rel)}:{node.lineno} imports {node.module}")
    assert upward == []
