"""``dream-plugin ab`` output: --out checked before any work, earlier runs never mixed, numbers saved first."""

from __future__ import annotations

import json
import os

import pytest

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab import runner
from dream_plugin.harness.ab.output import OutputError, prepare_out_dir, write_json_atomic, write_report
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError

TINY = {"dataset": "digits", "ipc": 1, "iterations": 1, "eval_points": 1, "batch_real": 4, "arms": ["random"],
        "model": {"width": 4}, "eval": {"nets": 1, "epochs": 1}, "device": "cpu", "threads": 1, "progress": False}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run gets as far as loading data (i.e. did work before refusing)."""
    def refuse(*_a, **_k):
        raise AssertionError("the run started before --out was checked")

    monkeypatch.setattr(runner, "load_data", refuse)


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, no_work):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"out \(--out\): '.*results.txt' is a file, not a folder"):
        run_ab(build_config(TINY), out=f, log=None)


def test_out_inside_a_file_is_refused_before_any_work(tmp_path, no_work):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"'.*file/sub/deeper' lies inside '.*file', which is a file"):
        run_ab(build_config(TINY), out=f / "sub" / "deeper", log=None)


def test_unwritable_out_is_refused_before_any_work(unwritable_dir, no_work):
    with pytest.raises(ConfigError, match=r"out \(--out\): '.*new' is not writable: the folder .* refuses new files"):
        run_ab(build_config(TINY), out=os.path.join(unwritable_dir, "new"), log=None)


def test_folder_with_an_earlier_run_is_refused_unless_force(tmp_path, no_work):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "synthetic_dream.png").write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"already holds an earlier run \(results.json, synthetic_dream.png\); "
                                          r"choose another folder, or pass --force"):
        run_ab(build_config(TINY), out=tmp_path, log=None)
    assert prepare_out_dir(tmp_path, force=True) == tmp_path


def test_cli_refuses_bad_out_in_one_line(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["ab", "--dataset", "digits", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err


def test_force_replaces_the_earlier_run_without_mixing(tmp_path):
    (tmp_path / "results.json").write_text('{"old": true}')
    (tmp_path / "synthetic_kcenter.png").write_bytes(b"old")  # an arm the new run does not have
    (tmp_path / "notes.txt").write_text("mine")  # not a run file: left alone
    results = run_ab(build_config(TINY), out=tmp_path, log=None, force=True)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".dream-ab.lock")
    assert names == ["curves.png", "notes.txt", "results.json", "synthetic_random.png"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "old" not in saved and saved["files"] == results["files"]
    assert saved["files"] == {"results": "results.json", "curves": "curves.png", "synthetic_random": "synthetic_random.png"}


def test_results_json_survives_a_failing_plot(tmp_path, monkeypatch):
    import dream_plugin.harness.ab.report as report

    def broken(*_a, **_k):
        raise RuntimeError("no display")

    monkeypatch.setattr(report, "save_curves", broken)
    with pytest.raises(OutputError, match=r"every number of this run is saved in '.*results.json', but writing the "
                                          r"plots failed: RuntimeError: no display"):
        run_ab(build_config(TINY), out=tmp_path / "run", log=None)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["arms"]["random"]["final"]["mean"] >= 0 and saved["files"] == {"results": "results.json"}


def test_cli_reports_a_failing_plot_in_one_line(tmp_path, monkeypatch, capsys):
    def failing(results, out_dir, make_plots):
        raise OutputError("every number of this run is saved in 'x/results.json', but writing the plots failed")

    monkeypatch.setattr(runner, "write_report", failing)
    code = main(["ab", "--dataset", "digits", "--arms", "random", "--ipc", "1", "--iterations", "1", "--eval-points",
                 "1", "--batch-real", "4", "--width", "4", "--eval-nets", "1", "--eval-epochs", "1", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "every number of this run is saved" in capsys.readouterr().err


def test_atomic_json_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic({"a": 1}, target)
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, target)  # not JSON-serialisable: fails mid-write
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left


def test_write_report_writes_results_before_plots(tmp_path):
    seen = {}

    def plots():
        seen["results_at_plot_time"] = json.loads((tmp_path / "results.json").read_text())
        return {"curves": "curves.png"}

    files = write_report({"arms": {"x": 1}}, tmp_path, plots)
    assert seen["results_at_plot_time"]["arms"] == {"x": 1}
    assert files == {"results": "results.json", "curves": "curves.png"}


def test_results_json_that_cannot_be_written_is_one_error_naming_it(tmp_path, monkeypatch):
    import dream_plugin.harness.ab.output as output

    def full_disk(data, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "write_json_atomic", full_disk)
    printed = []
    with pytest.raises(OutputError, match=r"cannot write '.*results.json' \(No space left on device\); the table "
                                          r"above holds this run's main numbers"):
        run_ab(build_config(TINY), out=tmp_path / "run", log=printed.append)
    assert any("final acc@1" in line for line in printed)  # the table was printed before the write failed
