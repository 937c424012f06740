"""Paths a command writes to: checked before the command does any work, and written atomically.

Each error is a :class:`~dream_plugin.core.config.ConfigError` that starts with the option's name
(``label``) and says what is wrong with the path: a file where a folder should be, a folder inside
a file, or a folder that refuses new files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from dream_plugin.common.errors import ConfigError


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync, then rename onto ``path``.

    Readers see the old file or the whole new one, never a part; the temporary file never
    survives a failure (an exception or Ctrl-C inside ``write``).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _writable(folder: Path) -> OSError | None:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".dream-plugin-write-check"):
            return None
    except OSError as exc:
        return exc


def check_writable_folder(path: str | os.PathLike[str], label: str) -> Path:
    """``path`` must be a folder (existing or not) that can be created and written; nothing is created."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{label}: {str(folder)!r} is a file, not a folder; choose a folder path")
    base = nearest_existing(folder)
    if not base.is_dir():
        raise ConfigError(f"{label}: {str(folder)!r} lies inside {str(base)!r}, which is a file; "
                          "choose a path whose parents are folders")
    exc = _writable(base)
    if exc is not None:
        what = "folder" if base == folder else f"folder {str(base)!r} (where it would be created)"
        raise ConfigError(f"{label}: {str(folder)!r} is not writable: the {what} refuses new files "
                          f"({exc.strerror or exc}); choose a writable folder")
    return folder


def check_writable_file(path: str | os.PathLike[str], label: str) -> Path:
    """``path`` must be a file that can be written: not a folder, and its folder creatable and writable."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{label}: {str(target)!r} is a folder; expected a file path (e.g. {str(target / 'picks.pt')!r})")
    base = nearest_existing(target.parent)
    if not base.is_dir():
        raise ConfigError(f"{label}: {str(target)!r} lies inside {str(base)!r}, which is a file; "
                          "choose a path whose parents are folders")
    exc = _writable(base)
    if exc is not None:
        raise ConfigError(f"{label}: {str(target)!r} is not writable: the folder {str(base)!r} refuses new files "
                          f"({exc.strerror or exc}); choose a writable folder")
    return target
