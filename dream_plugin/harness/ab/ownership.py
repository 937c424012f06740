"""One owner per ``dream-plugin ab`` output folder: an exclusive, non-blocking lock held for the whole run.

Two runs pointed at the same ``--out`` would both pass the start-up checks (neither has written
``results.json`` yet) and the later one would replace the other's results. The first run therefore
takes ``fcntl.flock`` on ``<out>/.dream-ab.lock`` and writes who it is into the file; a second run is
refused at once naming that owner. The operating system drops the lock when the owner's process
ends, however it ends, so a crashed run never leaves the folder locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from dream_plugin.core.config import ConfigError

LOCK_NAME = ".dream-ab.lock"


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)}


def _describe(text: str) -> str:
    try:
        who = json.loads(text)
        return f"pid {who['pid']} on {who['host']}, started {who['started']}: {who['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no description"


class OutLock:
    """The exclusive lock on one output folder (a context manager; creates the folder)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self._fd: int | None = None

    def acquire(self) -> "OutLock":
        """Take the lock, or raise :class:`ConfigError` naming the run that holds it."""
        import fcntl

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise ConfigError(f"out (--out): {str(self.out_dir)!r} is in use by another dream-plugin ab run "
                              f"({_describe(text)}); wait for it to end or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner()).encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays: removing it would let a third run lock a different inode)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "OutLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
