"""Ctrl-C and ``--resume`` in ``dream-plugin ab``: a real SIGINT to the process group in every ``--jobs`` mode,
and a resumed run that computes exactly the numbers of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.arm import run_arm
from dream_plugin.harness.ab.runner import load_data
from dream_plugin.harness.ab.runstate import RunStore
from dream_plugin.cli import main

from test_ab_idc import TINY_IDC
from test_ab_output import TINY


class StopAfter(RunStore):
    """A store whose run is interrupted (KeyboardInterrupt) right after it saved evaluation point ``at``."""

    def __init__(self, root, arm, seed, at):
        super().__init__(root, arm, seed)
        self.at = at

    def save_state(self, state):
        super().save_state(state)
        if state["iteration"] == self.at:
            raise KeyboardInterrupt


CASES = {
    # DREAM's re-clustering count runs across iterations (interval 3, one call per class and iteration)
    "dm-dream": ({**TINY, "arms": ["dream"], "iterations": 5, "eval_at": [0, 2], "interval": 3, "batch_real": 8},
                 "dream", 2),
    # the host sampler draws from numpy's global generator
    "dc-random": ({**TINY, "method": "dc", "arms": ["random"], "iterations": 3, "eval_at": [0, 1],
                   "dc": {"outer_loop": 2, "inner_loop": 1}}, "random", 1),
    # the matching network (built at iteration 0, kept for fix_iter 2) and its SGD momentum carry over
    "idc-dream": ({**TINY_IDC, "eval_at": [0, 1], "idc": {**TINY_IDC["idc"], "fix_iter": 2, "inner_loop": 2}},
                  "dream", 1),
}


def _run_and_interrupt(case, tmp_path):
    """An uninterrupted run of ``case``, and the store of the same run stopped after its ``stop`` point."""
    data_cfg, arm, stop = CASES[case]
    cfg = build_config(data_cfg)
    data, cpu = load_data(cfg), torch.device("cpu")
    full = run_arm(arm, 0, cfg, data, cpu)
    with pytest.raises(KeyboardInterrupt):
        run_arm(arm, 0, cfg, data, cpu, store=StopAfter(tmp_path, arm, 0, stop))
    return cfg, data, cpu, arm, stop, full, RunStore(tmp_path, arm, 0)


@pytest.mark.parametrize("case", list(CASES))
def test_a_resumed_run_computes_the_numbers_of_an_uninterrupted_one(case, tmp_path):
    cfg, data, cpu, arm, stop, full, store = _run_and_interrupt(case, tmp_path)
    assert store.resume_point() == stop and store.load_result(type(full)) is None
    resumed = run_arm(arm, 0, cfg, data, cpu, store=store)
    assert resumed.losses == full.losses and len(full.losses) == cfg.iterations
    assert resumed.curve == full.curve and resumed.live == full.live
    assert torch.equal(resumed.synthetic, full.synthetic)
    assert (resumed.selections, resumed.reclusterings) == (full.selections, full.reclusterings)
    assert store.load_result(type(full)).losses == full.losses  # the finished run is saved whole


def test_a_state_saved_under_the_older_key_of_the_idc_network_resumes_alike(tmp_path):
    cfg, data, cpu, arm, _, full, store = _run_and_interrupt("idc-dream", tmp_path)
    state = store.load_state()
    assert state["loop_state"] is not None  # the matching network, kept for fix_iter 2
    state["idc_network"] = state.pop("loop_state")  # as a run saved it before loop methods were modules
    store.save_state(state)
    resumed = run_arm(arm, 0, cfg, data, cpu, store=store)
    assert resumed.losses == full.losses and resumed.curve == full.curve and resumed.live == full.live


def test_resume_refuses_a_folder_of_another_config_naming_the_difference(tmp_path, capsys):
    from dream_plugin.harness.ab import resume

    resume.save_config(tmp_path, build_config({**TINY, "ipc": 1}))
    assert main(["ab", "--resume", str(tmp_path), "--ipc", "2", "--eval-nets", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"dream-plugin: error: --resume: {str(tmp_path)!r} holds a run of another config (differs in "
                   "ipc: 1 there, 2 here); resume without those options, or start a new run in another folder\n")
    assert main(["ab", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a folder; give the --out folder of an interrupted run" in capsys.readouterr().err
    assert main(["ab", "--resume", str(tmp_path.parent)]) == 2
    assert "holds no interrupted dream-plugin ab run" in capsys.readouterr().err


def test_resume_refuses_an_out_folder_other_than_the_resumed_one(tmp_path, capsys):
    from dream_plugin.harness.ab import resume

    resume.save_config(tmp_path, build_config(TINY))
    other = tmp_path.parent / "elsewhere"
    assert main(["ab", "--resume", str(tmp_path), "--out", str(other)]) == 2
    assert (f"--resume {str(tmp_path)!r} continues the run in that folder and writes its results there; --out "
            f"{str(other)!r} names another folder: drop --out") in capsys.readouterr().err
    assert not other.exists()


def test_a_fresh_run_into_an_interrupted_folder_points_to_resume(tmp_path, capsys):
    from dream_plugin.harness.ab import resume

    resume.save_config(tmp_path, build_config(TINY))
    assert main(["ab", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    assert (f"out (--out): {str(tmp_path)!r} holds an interrupted run; continue it with dream-plugin ab --resume "
            f"{str(tmp_path)!r}, or pass --force to start over") in capsys.readouterr().err


FLAGS = ["--dataset", "digits", "--arms", "random", "dream", "--ipc", "1", "--iterations", "16", "--eval-points", "3",
         "--batch-real", "8", "--width", "4", "--eval-nets", "1", "--eval-epochs", "2", "--device", "cpu",
         "--no-progress"]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.skipif(not Path("/proc").is_dir() or os.name != "posix", reason="needs process groups and /proc")
@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_to_the_process_group_stops_saves_and_resumes_to_the_same_numbers(jobs, tmp_path):
    out = tmp_path / "run"
    seeds: list[str] = []
    argv = [sys.executable, "-m", "dream_plugin.cli", "ab", *FLAGS, *seeds, "--jobs", str(jobs), "--out", str(out)]
    # a shell starts background jobs with SIGINT ignored, and Python keeps it ignored: give the command
    # the terminal's default, so the test sees what Ctrl-C does however pytest itself was started
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        end = time.monotonic() + 240
        while not list((out / "resume").glob("*/result.pt")):  # one run finished, the others under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "no run finished in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    # a guard against a run that keeps going (queued jobs, a stuck worker), not a speed target: on a
    # loaded machine writing results.json and the plots alone can take several seconds
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop"
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith("dream-plugin: interrupted: ") and f"continue with: dream-plugin ab --resume {out}" in stderr
    deadline = time.monotonic() + 5
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_members(proc.pid) == [], "a worker outlived the command"
    saved = json.loads((out / "results.json").read_text())
    assert saved["incomplete"] is True and saved["finished_runs"]
    assert len(saved["finished_runs"]) == 1 and len(saved["unfinished_runs"]) == 1

    assert main(["ab", "--resume", str(out), "--jobs", "1"]) == 0  # jobs may differ: the numbers do not
    resumed = json.loads((out / "results.json").read_text())
    assert "incomplete" not in resumed and not (out / "resume").exists()
    from dream_plugin.harness.ab.cli import flags_to_overrides
    from dream_plugin.cli import build_parser

    cfg = build_config(None, flags_to_overrides(build_parser().parse_args(["ab", *FLAGS, *seeds])))
    fresh = run_ab(cfg, write=False, log=None)
    for arm in ("random", "dream"):
        for a, b in zip(resumed["arms"][arm]["runs"], fresh["arms"][arm]["runs"]):
            for key in ("curve", "loss_first", "loss_last", "selections", "reclusterings"):
                assert a[key] == b[key], (arm, key)
