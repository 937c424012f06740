"""The sidecar folder ``<out>.partial/`` of a precompute job, kept trustworthy across interruptions.

* ``manifest.json`` holds the job (data fingerprint, K, seed, k-means settings, source) and the
  SHA-256 of every finished class file. It is rewritten atomically after each class.
* Each class file is written atomically (a temporary file, then a rename), and its checksum is
  recorded only after the rename: a file the manifest does not vouch for was never finished.
* On resume, every class file is checked against the manifest. A corrupt file (checksum mismatch)
  or a foreign one (not recorded, or for a class the job does not have) is named, discarded and
  recomputed, so a bad file can never make every rerun fail the same way.
* A manifest that cannot be read is reported as corrupt, with the fix (``--restart``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from dream_plugin.common.paths import write_atomic

MANIFEST = "manifest.json"
CHECKSUMS = "checksums"
_CLASS_FILE = re.compile(r"^class_(\d{6,})\.pt$")


def class_file(d: Path, c: int) -> Path:
    """The finished-class file of class ``c`` in the partial folder ``d``."""
    return d / f"class_{c:06d}.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(job: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(job))


def _read_manifest(d: Path) -> dict[str, Any]:
    path = d / MANIFEST
    fix = f"pass --restart (restart=True) to delete {str(d)!r} and start over"
    if not path.is_file():
        raise ValueError(f"{str(d)!r} has no {MANIFEST}, so it is not an interrupted run this dream-plugin can resume; "
                         f"{fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is corrupt ({type(exc).__name__}: {exc}); its finished classes cannot be "
                         f"trusted: {fix}") from None
    if not isinstance(data, dict) or not isinstance(data.get(CHECKSUMS, {}), dict):
        raise ValueError(f"{str(path)!r} is corrupt (not a precompute manifest); its finished classes cannot be "
                         f"trusted: {fix}")
    return data


def _write_manifest(d: Path, data: dict[str, Any]) -> None:
    write_atomic(d / MANIFEST, lambda tmp: tmp.write_text(json.dumps(data, indent=1), encoding="utf-8"))


def open_partial(d: Path, job: dict[str, Any], restart: bool) -> None:
    """Create ``d`` with the job's manifest, or check that the interrupted run there is this job."""
    if d.exists() and not d.is_dir():
        raise ValueError(f"{str(d)!r} (the folder of finished classes of this job) is a file; remove it")
    if d.exists() and restart:
        shutil.rmtree(d)
    if d.exists():
        old = _read_manifest(d)
        recorded = {k: v for k, v in old.items() if k != CHECKSUMS}
        if recorded != _plain(job):
            diffs = [key for key in job if _plain(job)[key] != recorded.get(key)]
            raise ValueError(
                f"{str(d)!r} holds an interrupted run of a different job (differs in: {', '.join(diffs) or 'manifest'}); "
                "delete it or pass --restart (restart=True) to start over"
            )
        return
    d.mkdir(parents=True)
    _write_manifest(d, {**_plain(job), CHECKSUMS: {}})


def discard_untrusted(d: Path, num_classes: int) -> list[str]:
    """Delete every class file in ``d`` that the manifest does not vouch for; returns one line per file.

    Leftover temporary files of an interrupted write are removed too (they were never finished).
    """
    manifest = _read_manifest(d)
    sums: dict[str, str] = dict(manifest.get(CHECKSUMS, {}))
    discarded: list[str] = []
    for path in sorted(d.iterdir()):
        if path.name.startswith(".class_") and ".tmp" in path.name:
            path.unlink()
            continue
        m = _CLASS_FILE.match(path.name)
        if m is None:
            continue
        c = int(m.group(1))
        if c >= num_classes:
            reason = f"foreign: this job has classes 0..{num_classes - 1}"
        elif path.name not in sums:
            reason = "foreign or unfinished: not recorded in the manifest"
        elif _sha256(path) != sums[path.name]:
            reason = "corrupt: its checksum does not match the manifest"
        else:
            continue
        path.unlink()
        sums.pop(path.name, None)
        discarded.append(f"{path} ({reason}); recomputed")
    stale = [name for name in sums if not (d / name).is_file()]
    for name in stale:
        sums.pop(name)
    if discarded or stale:
        _write_manifest(d, {**manifest, CHECKSUMS: sums})
    return discarded


def save_class(d: Path, c: int, result: dict[str, Any]) -> None:
    """Write class ``c``'s result atomically, then record its checksum in the manifest."""
    path = class_file(d, c)
    write_atomic(path, lambda tmp: torch.save(result, tmp))
    manifest = _read_manifest(d)
    _write_manifest(d, {**manifest, CHECKSUMS: {**manifest.get(CHECKSUMS, {}), path.name: _sha256(path)}})


def load_class(d: Path, c: int) -> dict[str, Any]:
    """Load a finished class file; any failure names the file and the fix."""
    path = class_file(d, c)
    try:
        part = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"{str(path)!r} cannot be read ({type(exc).__name__}); delete it and rerun to recompute "
                         "that class") from None
    if not isinstance(part, dict) or not {"pool_size", "feature_dim", "picks", "inertia", "n_iter"} <= set(part):
        raise ValueError(f"{str(path)!r} is not a finished-class file of dream-plugin precompute; delete it and "
                         "rerun to recompute that class")
    return part
