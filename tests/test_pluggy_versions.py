"""The plugin machinery against the oldest and the newest pluggy the project allows.

pytest itself needs a recent pluggy, so the checks (``tests/pluggy_compat.py``) run in a
subprocess: once with the installed pluggy, once with the oldest allowed one put first on
``sys.path``. The oldest is a pure-Python wheel or directory named by ``DREAM_PLUGIN_OLDEST_PLUGGY``;
``.ci/run`` fetches it with ``pip download pluggy==<lower bound> --no-deps``. Without it that test
is skipped, saying how to run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

HERE = Path(__file__).parent
SCRIPT = HERE / "pluggy_compat.py"


def _bounds() -> tuple[str, str | None]:
    text = (HERE.parent / "pyproject.toml").read_text()
    spec = re.search(r'"pluggy([^"]*)"', text).group(1)
    lower = re.search(r">=\s*([\d.]+)", spec).group(1)
    upper = re.search(r"<\s*([\d.]+)", spec)
    return lower, upper.group(1) if upper else None


def _run(extra_path: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = [int(x) for x in re.findall(r"\d+", v)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def test_with_the_installed_pluggy():
    lower, upper = _bounds()
    assert _version_tuple(pluggy.__version__) >= _version_tuple(lower)
    assert upper is None or _version_tuple(pluggy.__version__) < _version_tuple(upper)
    out = _run(None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"pluggy {pluggy.__version__}:" in out.stdout


def test_with_the_oldest_allowed_pluggy():
    lower, _ = _bounds()
    path = os.environ.get("DREAM_PLUGIN_OLDEST_PLUGGY")
    if not path:
        pytest.skip(f"set DREAM_PLUGIN_OLDEST_PLUGGY to a pluggy=={lower} wheel "
                    f"(pip download pluggy=={lower} --no-deps -d DIR) to run the checks against it")
    out = _run(path)
    assert out.returncode == 0, out.stdout + out.stderr
    ran = re.search(r"pluggy (\S+):", out.stdout).group(1)
    assert _version_tuple(ran) == _version_tuple(lower), f"{path} holds pluggy {ran}, not {lower}"
