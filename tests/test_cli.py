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
