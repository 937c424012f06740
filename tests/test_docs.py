"""The configuration reference and the plugin example in docs/ must work as written."""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch
import yaml

from dream_plugin.core.config import Settings, parse_settings
from dream_plugin.core.selector import Selector

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_configuration_reference_lists_every_key_with_its_default(isolated_pm):
    text = (DOCS / "configuration.md").read_text()
    data = yaml.safe_load(blocks(text, "yaml")[0])
    data["options"]["precomputed"]["path"] = None  # documented as required only for that strategy
    settings = parse_settings(data)
    assert settings == parse_settings(Settings().to_dict() | {"options": data["options"]})
    # every strategy option documented equals the strategy's real default
    sel = Selector(settings, plugin_manager=isolated_pm)
    import dataclasses

    for name, documented in data["options"].items():
        assert dataclasses.asdict(sel._options(name)) == documented, name


def test_plugin_example_runs_as_documented(isolated_pm):
    text = (DOCS / "configuration.md").read_text()
    code = next(b for b in blocks(text, "python") if "register_strategies" in b)
    mod = types.ModuleType("my_dream_ext")
    exec(compile(code, "my_dream_ext.py", "exec"), mod.__dict__)
    isolated_pm.register(mod, name="farthest")
    sel = Selector(Settings(strategy="farthest-from-mean"), plugin_manager=isolated_pm)
    feats = torch.tensor([[0.0], [1.0], [2.0], [9.0]])
    picks = sel.select(0, 1, torch.arange(4), lambda p: feats[p], embed=lambda x: x)
    assert picks.tolist() == [3]
    assert sel.strategies["farthest-from-mean"].plugin == "farthest"


def test_errors_table_names_at_least_30_kinds_each_with_an_existing_test():
    import ast

    text = (DOCS / "errors.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    numbers = [int(line.split("|")[1]) for line in rows]
    assert len(rows) >= 30 and numbers == list(range(1, len(rows) + 1))
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) >= 4 and all(cells[:4]), line  # kind, message, test: none left empty
    root = DOCS.parent
    defined: dict[str, set[str]] = {}
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert {r for r in rows if not re.search(r"`tests/[\w/]+\.py::\w+`", r)} == set()  # every row names its test
    for path, name in refs:
        if path not in defined:
            tree = ast.parse((root / path).read_text())
            defined[path] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in defined[path], f"docs/errors.md names {path}::{name}, which does not exist"
