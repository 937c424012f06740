"""``dream-plugin ab --resume OUT``: continue an interrupted or stopped run in its own folder.

A run saves its configuration to ``<out>/resume/config.json`` when it starts, and each (arm, seed)
run saves its progress beside it (:mod:`~dream_plugin.harness.ab.runstate`). ``--resume`` rebuilds the
configuration from that file (flags and ``--config`` given with it may only repeat it: anything
that would change the numbers is refused, naming the difference; ``jobs`` and ``progress`` may
differ) and the runner continues every unfinished run. The folder is removed when the run's
results are written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from dream_plugin.core.config import ConfigError, build_dataclass, deep_merge
from dream_plugin.common.paths import write_atomic
from dream_plugin.harness.ab.config import QUICK, AbConfig
from dream_plugin.harness.ab.methods import get_method

RESUME_DIR = "resume"
CONFIG_FILE = "config.json"
MAY_DIFFER = ("jobs", "progress", "out", "share")
"""Options a resumed run may change: they do not change its numbers."""


def resume_dir(out: str | Path) -> Path:
    return Path(out) / RESUME_DIR


def save_config(out: str | Path, cfg: AbConfig) -> None:
    """Record the run's configuration (at its start) so ``--resume`` can rebuild it."""
    path = resume_dir(out) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def clear(out: str | Path) -> None:
    """Remove the saved progress (the run finished, or ``--force`` starts over)."""
    shutil.rmtree(resume_dir(out), ignore_errors=True)


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value and key != "selector":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def saved_config(out: str | Path) -> dict[str, Any]:
    """The configuration an interrupted run in ``out`` saved; ConfigError naming ``--resume`` otherwise."""
    folder = Path(out)
    path = resume_dir(folder) / CONFIG_FILE
    if not folder.is_dir():
        raise ConfigError(f"--resume: {str(folder)!r} is not a folder; give the --out folder of an interrupted run")
    if not path.is_file():
        done = " (its run finished: results.json is complete)" if (folder / "results.json").is_file() else ""
        raise ConfigError(f"--resume: {str(folder)!r} holds no interrupted dream-plugin ab run{done}; "
                          f"there is no {RESUME_DIR}/{CONFIG_FILE} to continue from")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                          "start the run again with --force") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--resume: {str(path)!r} does not hold a configuration; start the run again with --force")
    return data


def resume_config(out: str | Path, file_data: Mapping[str, Any] | None, flags: Mapping[str, Any] | None,
                  *, quick: bool = False) -> AbConfig:
    """The configuration of the run in ``out``; options given with ``--resume`` must not change it."""
    saved = saved_config(out)
    data = deep_merge(saved, file_data or {})
    if quick:
        data = deep_merge(deep_merge(data, QUICK), get_method(data.get("method", AbConfig.method)).quick)
    data = deep_merge(data, flags or {})
    cfg = build_dataclass(AbConfig, data).validate()
    before, after = _flat(saved), _flat(json.loads(json.dumps(cfg.to_dict())))
    diffs = [f"{k}: {before.get(k)!r} there, {after.get(k)!r} here" for k in sorted(set(before) | set(after))
             if k not in MAY_DIFFER and before.get(k) != after.get(k)]
    if diffs:
        raise ConfigError(f"--resume: {str(out)!r} holds a run of another config (differs in {'; '.join(diffs)}); "
                          "resume without those options, or start a new run in another folder")
    return cfg
