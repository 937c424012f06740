"""Where ``dream-plugin ab`` writes, checked before any work, and how it writes without losing numbers.

* :func:`prepare_out_dir` runs before the first distillation step: the folder must be creatable and
  writable, must not be a file or lie inside one, and must not hold an earlier run unless
  ``force`` (then the earlier run's files are replaced, never mixed with the new ones).
* :func:`write_report` writes ``results.json`` first (atomically: a temporary file, then a rename),
  then the plots. A plot that fails leaves every number saved and says where.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from dream_plugin.core.config import ConfigError
from dream_plugin.common.paths import check_writable_folder, write_atomic

RESULTS = "results.json"
RUN_FILES = (RESULTS, "curves.png")
"""Files an ``ab`` run writes besides ``synthetic_<arm>.png``."""


class OutputError(RuntimeError):
    """Writing the run's outputs failed after the numbers were saved; the message says where they are."""


class RunInterrupted(Exception):
    """The run was interrupted (Ctrl-C); the message says what was saved and how to continue."""


def earlier_run_files(out_dir: Path) -> list[Path]:
    """The files of an earlier ``ab`` run in ``out_dir`` (results.json, curves.png, synthetic_*.png)."""
    if not out_dir.is_dir():
        return []
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    found += sorted(out_dir.glob("synthetic_*.png"))
    return found


def prepare_out_dir(out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Check the output folder of a run before the run starts; returns it as a :class:`Path`.

    Nothing is created here: only the checks that the folder can be created and written later.
    Raises :class:`~dream_plugin.core.config.ConfigError` naming ``out (--out)`` and the problem.
    """
    out_dir = check_writable_folder(out, "out (--out)")
    if (out_dir / "resume").is_dir() and not force:
        raise ConfigError(f"out (--out): {str(out_dir)!r} holds an interrupted run; continue it with "
                          f"dream-plugin ab --resume {str(out_dir)!r}, or pass --force to start over")
    earlier = earlier_run_files(out_dir)
    if earlier and not force:
        names = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise ConfigError(f"out (--out): {str(out_dir)!r} already holds an earlier run ({names}); choose another "
                          "folder, or pass --force to replace that run's files")
    return out_dir


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: strict JSON parsers reject ``NaN``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(data: Any, path: Path) -> None:
    """Write strict JSON (no NaN/Infinity: see :func:`strict_json`) to ``path`` through a temporary file
    in the same folder and a rename."""
    # serialised first: a value JSON cannot hold fails before any write
    text = json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_report(results: dict[str, Any], out_dir: Path, make_plots: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``results.json`` first, then ``make_plots()`` (returns ``{key: file name}``), then ``results.json``
    again listing every file. An earlier run's files in ``out_dir`` are removed first (the folder was
    accepted with ``force``), so old plots never sit beside new numbers."""
    results["out"] = str(out_dir)
    results["files"] = {"results": RESULTS}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in earlier_run_files(out_dir):
            old.unlink()
        write_json_atomic(results, out_dir / RESULTS)
    except OSError as exc:  # e.g. the disk filled up or the folder was removed during the run
        raise OutputError(f"cannot write {str(out_dir / RESULTS)!r} ({exc.strerror or exc}); the table above "
                          "holds this run's main numbers") from exc
    try:
        plots = make_plots()
    except Exception as exc:  # noqa: BLE001 - whatever failed, the numbers are already safe
        raise OutputError(f"every number of this run is saved in {str(out_dir / RESULTS)!r}, but writing the plots "
                          f"failed: {type(exc).__name__}: {exc}") from exc
    results["files"] = {"results": RESULTS, **plots}
    write_json_atomic(results, out_dir / RESULTS)
    return results["files"]
