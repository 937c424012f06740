"""Shipped ``selection_done`` observers: a JSON-lines records file, a logging summary, TensorBoard/wandb.

They are ordinary pluggy plugins (``@hookimpl selection_done``), so they see exactly what any
third-party observer sees: every :class:`~dream_plugin.core.requests.SelectionRecord`, of both A/B arms,
including the host sampler's own draws. :func:`attach` registers the ones the settings switch on
(``observe:`` in the YAML config, or ``DREAM_RECORDS`` / ``DREAM_LOG``); every adapter calls it on
its selector, so a host run needs no code for them. Registration is idempotent per plugin manager:
one file writer per path, however many selectors (one per experiment) the host makes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from dream_plugin.core.config import ConfigError, ObserveSettings
from dream_plugin.core.hookspecs import hookimpl
from dream_plugin.core.requests import SelectionRecord

__all__ = [
    "LoggingSummary",
    "RecordsWriter",
    "TensorBoardObserver",
    "WandbObserver",
    "attach",
    "read_records",
    "LOGGER_NAME",
]

LOGGER_NAME = "dream_plugin.selection"
logger = logging.getLogger(LOGGER_NAME)

_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(SelectionRecord))


class RecordsWriter:
    """Appends every record as one JSON object per line (flushed per line, so a crash keeps them).

    The file is opened when the writer is made (an adapter's construction, through :func:`attach`),
    so a path that cannot be written is an error before the host's work, and a header line
    ``{"header": {...}}`` (start time, host, command, process id, rank) starts each run's records.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: Any = self._open()
        self._write(json.dumps({"header": run_header()}, sort_keys=True))

    def _open(self) -> Any:
        label = "observe.records (DREAM_RECORDS)"
        if self.path.is_dir():
            raise ConfigError(f"{label}: {str(self.path)!r} is a folder; expected a file path such as "
                              f"{str(self.path / 'records.jsonl')!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        except OSError as exc:
            raise ConfigError(f"{label}: {str(self.path)!r} cannot be written ({exc.strerror or exc}); "
                              "choose a writable file, or unset it to write no records") from None

    def _write(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                self._file = self._open()
            self._file.write(line + "\n")
            self._file.flush()

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        self._write(json.dumps(record.as_dict(), sort_keys=True))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def run_header() -> dict[str, Any]:
    """Who writes the records that follow: start time (UTC), host, command, process id, rank."""
    import socket
    import time

    return {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "command": " ".join(sys.argv), "pid": os.getpid(), "rank": int(os.environ.get("RANK", "0") or 0)}


def read_records(path: str | os.PathLike[str]) -> list[SelectionRecord]:
    """The records of a JSON-lines file written by :class:`RecordsWriter` (blank and header lines skipped)."""
    return list(iter_records(path))


def iter_records(path: str | os.PathLike[str], warn: Any = None) -> Iterator[SelectionRecord]:
    """Stream the records of a file (headers skipped); see :func:`iter_entries`."""
    for header, record in iter_entries(path, warn):
        if record is not None:
            yield record


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(SelectionRecord)}


def _check_types(data: dict[str, Any], where: str) -> None:
    for name, kind in _FIELD_TYPES.items():
        if name not in data:
            continue
        v = data[name]
        kind = str(kind)
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        ok = {"str": isinstance(v, str), "int": isinstance(v, int) and not isinstance(v, bool),
              "float": number, "bool": isinstance(v, bool),
              "int | None": v is None or (isinstance(v, int) and not isinstance(v, bool)),
              "float | None": v is None or number}.get(kind, True)
        if not ok:
            raise ValueError(f"{where}: field {name!r} is {type(v).__name__} {v!r}; expected {kind}")


def iter_entries(path: str | os.PathLike[str], warn: Any = None) -> Iterator[tuple[dict[str, Any] | None,
                                                                              SelectionRecord | None]]:
    """Stream ``(header, None)`` for each run header and ``(None, record)`` for each record, one line at a
    time. A last line cut short (no newline, not JSON: what a crash leaves) is skipped with
    ``warn(message)``; any other bad line, a folder or a binary file is a one-line ``ValueError``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{str(p)!r} is a folder; expected a records file (JSON lines)")
    with open(p, encoding="utf-8") as fh:
        number = 0
        while True:
            try:
                line = fh.readline()
            except UnicodeDecodeError:
                raise ValueError(f"{str(p)!r} is not a text file (not UTF-8 near line {number + 1}); expected a "
                                 "records file (JSON lines)") from None
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            if "\x00" in line:
                raise ValueError(f"{str(p)!r} is not a text file (a NUL byte on line {number}); expected a records "
                                 "file (JSON lines)")
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                if not line.endswith("\n") and warn is not None:
                    warn(f"{p}:{number}: skipped a truncated last line ({len(line)} characters, no newline)")
                    return
                raise ValueError(f"{p}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{p}:{number}: expected a JSON object (one SelectionRecord), got {type(data).__name__}")
            if set(data) == {"header"} and isinstance(data["header"], dict):
                yield data["header"], None
                continue
            missing = [f for f in _RECORD_FIELDS if f not in data and f != "note"]
            if missing:
                raise ValueError(f"{p}:{number}: not a SelectionRecord, missing {', '.join(missing)}")
            _check_types(data, f"{p}:{number}")
            yield None, SelectionRecord(**{k: data[k] for k in _RECORD_FIELDS if k in data})


def describe(record: SelectionRecord) -> str:
    """One line a person reads: what was selected, by whom, how long it took."""
    parts = [
        f"{record.kind} class {record.class_id}: {record.n} of {record.pool_size}",
        f"strategy={record.strategy}", f"by={record.answered_by}", f"{record.seconds * 1000:.1f} ms",
    ]
    if record.reclustered:
        parts.append("re-clustered")
        if record.kmeans_iterations is not None:
            parts.append(f"kmeans_iter={record.kmeans_iterations}")
        if record.inertia is not None:
            parts.append(f"inertia={record.inertia:.4g}")
        parts.append(f"embed {record.embed_seconds * 1000:.0f} ms, cluster {record.cluster_seconds * 1000:.0f} ms")
    if record.duplicates_resolved:
        parts.append(f"duplicates_resolved={record.duplicates_resolved}")
    if record.embed_source != "none":
        parts.append(f"src={record.embed_source}")
    if record.note:
        parts.append(f"note={record.note}")
    return ", ".join(parts)


class LoggingSummary:
    """Logs each re-selection (a record that re-clustered) at INFO, every other record at DEBUG.

    The logger is ``dream_plugin.selection``; nothing shows unless the host configures logging or
    ``observe.log`` / ``DREAM_LOG`` asks :func:`attach` for a stderr handler.
    """

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        level = logging.INFO if record.reclustered else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "%s", describe(record))


class TensorBoardObserver:
    """Scalars per record in TensorBoard: seconds, and k-means iterations / inertia of re-selections."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # ImportError when tensorboard is absent

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._steps: dict[str, int] = {}

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        tag = f"dream/{record.kind}/{record.strategy}"
        step = self._steps.get(tag, 0)
        self._steps[tag] = step + 1
        self.writer.add_scalar(f"{tag}/seconds", record.seconds, step)
        if record.reclustered:
            if record.kmeans_iterations is not None:
                self.writer.add_scalar(f"{tag}/kmeans_iterations", record.kmeans_iterations, step)
            if record.inertia is not None:
                self.writer.add_scalar(f"{tag}/inertia", record.inertia, step)


class WandbObserver:
    """Logs each record's timings to the active wandb run (does nothing while no run is active)."""

    def __init__(self) -> None:
        import wandb  # ImportError when wandb is absent

        self.wandb = wandb

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        if getattr(self.wandb, "run", None) is None:
            return
        key = f"dream/{record.kind}/{record.strategy}"
        data = {f"{key}/seconds": record.seconds, f"{key}/reclustered": int(record.reclustered)}
        if record.inertia is not None:
            data[f"{key}/inertia"] = record.inertia
        self.wandb.log(data, commit=False)


def records_path(template: str, environ: Any = None) -> str:
    """The records file for this process: ``{rank}`` in the path becomes $RANK (0 without it)."""
    env = os.environ if environ is None else environ
    return template.replace("{rank}", str(env.get("RANK", "0")))


def _register_once(pm: Any, name: str, make: Any) -> Any:
    existing = pm.get_plugin(name)
    if existing is not None:
        return existing
    plugin = make()
    pm.register(plugin, name=name)
    return plugin


def _stderr_handler(level: str) -> None:
    logger.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    if not any(getattr(h, "_dream_plugin", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("dream-plugin: %(message)s"))
        handler._dream_plugin = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def attach(selector: Any, observe: ObserveSettings | None = None) -> list[str]:
    """Register the observers ``observe`` (default: the selector's settings) switches on; their names.

    The logging summary is always registered (it is silent unless logging is configured). An
    optional observer whose package is not installed is skipped with one warning.
    """
    observe = observe if observe is not None else selector.settings.observe
    pm = selector.pm
    names = ["dream_plugin.hosts.observers.logging"]
    _register_once(pm, names[0], LoggingSummary)
    if observe.log != "off":
        _stderr_handler(observe.log)
    if observe.records:
        path = os.path.abspath(records_path(observe.records))
        names.append(f"dream_plugin.hosts.observers.records:{path}")
        _register_once(pm, names[-1], lambda: RecordsWriter(path))
    optional = []
    if observe.tensorboard:
        optional.append((f"dream_plugin.hosts.observers.tensorboard:{os.path.abspath(observe.tensorboard)}",
                         lambda: TensorBoardObserver(observe.tensorboard), "tensorboard"))
    if observe.wandb:
        optional.append(("dream_plugin.hosts.observers.wandb", WandbObserver, "wandb"))
    for name, make, package in optional:
        try:
            _register_once(pm, name, make)
        except ImportError:
            if not pm.get_plugin(f"{name}:missing"):
                import warnings

                warnings.warn(f"observe: the {package} package is not installed; its observer is off", RuntimeWarning,
                              stacklevel=2)
                pm.register(object(), name=f"{name}:missing")
            continue
        names.append(name)
    return names
