"""One owner per ``dream-plugin ab`` output folder: a second run into it is refused at once, naming the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.ownership import LOCK_NAME, OutLock
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError

from test_ab_output import TINY

TINY_FLAGS = ["--dataset", "digits", "--arms", "random", "--ipc", "1", "--eval-points", "1", "--batch-real", "4",
              "--width", "4", "--eval-nets", "1", "--eval-epochs", "1", "--device", "cpu", "--no-progress"]


def _wait_for_owner(out, proc, timeout=60.0):
    lock = out / LOCK_NAME
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the first run ended before the second started: {proc.communicate()}")
        if lock.exists() and lock.read_text().strip():
            return json.loads(lock.read_text())
        time.sleep(0.05)
    pytest.fail("the first run never locked its folder")


def test_second_concurrent_run_into_one_folder_is_refused_naming_the_owner(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "dream_plugin.cli", "ab", *TINY_FLAGS, "--iterations", "60",
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owner = _wait_for_owner(out, first)
        assert owner["pid"] == first.pid
        assert main(["ab", *TINY_FLAGS, "--iterations", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"out (--out): {str(out)!r} is in use by another dream-plugin ab run (pid {first.pid} on " in err
        assert "wait for it to end or choose another folder" in err
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["iterations"] == 60  # the first run's results, untouched by the refused one


def test_lock_is_free_again_after_the_owner_ends(tmp_path):
    run_ab(build_config(TINY), out=tmp_path / "a", log=None)
    with OutLock(tmp_path / "a"):  # the finished run released it
        with pytest.raises(ConfigError, match="is in use by another dream-plugin ab run"):
            OutLock(tmp_path / "a").acquire()
    OutLock(tmp_path / "a").acquire().release()


def test_lock_of_a_killed_owner_does_not_block(tmp_path):
    code = f"from dream_plugin.harness.ab.ownership import OutLock; OutLock({str(tmp_path)!r}).acquire(); import os; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (tmp_path / LOCK_NAME).read_text()  # the dead owner's description is still there
    OutLock(tmp_path).acquire().release()
