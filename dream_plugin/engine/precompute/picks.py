"""The picks file: what ``dream-plugin precompute`` writes and the ``precomputed`` strategy reads.

File format (``torch.save`` of a plain dict, readable with ``torch.load(weights_only=True)``)::

    format: "dream-plugin-picks", version: 1
    num_items, num_classes, pool_sizes (list), labels_sha256   # dataset fingerprint
    ks: [10, 50], feature_dim
    picks:     {K: int64 tensor (num_classes, K)}   # positions within each class's pool
    centroids: {K: float32 tensor (num_classes, K, feature_dim)} or None
    inertia:   {K: float64 tensor (num_classes,)};  n_iter: {K: int64 tensor (num_classes,)}
    seed, kmeans (options), source (what was embedded, with which network)

Positions are positions *within each class's pool*, in the order of
:meth:`dream_plugin.harness.data.ImageDataset.class_indices` (ascending dataset index per class), which
is the order the hosts' ``indices_class`` lists use. A host whose pools are ordered differently
gets different images for the same positions: the pool sizes are validated, the order cannot be.

This module depends on torch only, so the strategy that reads picks does not pull in the
precompute job (which itself depends on the strategies' k-means options).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

FORMAT = "dream-plugin-picks"
FORMAT_VERSION = 1


class PicksFileError(ValueError):
    """A picks file is missing, malformed, or does not match the data it is used with."""


# -------------------------------------------------------------------------------- fingerprint
@dataclass(frozen=True)
class Fingerprint:
    """What a picks file was computed for: sizes and a hash of the labels."""

    num_items: int
    num_classes: int
    pool_sizes: tuple[int, ...]
    labels_sha256: str

    @classmethod
    def from_labels(cls, labels: torch.Tensor, num_classes: int | None = None) -> "Fingerprint":
        """From a dataset's training labels (the order defines the per-class pool order)."""
        labels = torch.as_tensor(labels).to("cpu", torch.int64).flatten()
        if labels.numel() == 0:
            raise ValueError("labels is empty: nothing to precompute")
        if int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, found {int(labels.min())}")
        c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        sizes = torch.bincount(labels, minlength=c)
        if sizes.numel() > c:
            raise ValueError(f"labels hold class {sizes.numel() - 1} but num_classes={c}")
        digest = hashlib.sha256(labels.numpy().astype("<i8").tobytes()).hexdigest()
        return cls(int(labels.numel()), c, tuple(int(s) for s in sizes.tolist()), digest)

    @classmethod
    def from_pool_sizes(cls, pool_sizes: Sequence[int]) -> "Fingerprint":
        """For class-major data (class 0's items, then class 1's, ...) known only by its pool sizes."""
        sizes = [int(s) for s in pool_sizes]
        if not sizes:
            raise ValueError("pool_sizes is empty: nothing to precompute")
        bad = [(c, s) for c, s in enumerate(sizes) if s < 1]
        if bad:
            raise ValueError(f"every class needs at least one item; empty: classes {[c for c, _ in bad][:10]}")
        h = hashlib.sha256()
        for c, s in enumerate(sizes):  # the labels (class-major) streamed, never materialised whole
            h.update(torch.full((s,), c, dtype=torch.int64).numpy().astype("<i8").tobytes())
        return cls(sum(sizes), len(sizes), tuple(sizes), h.hexdigest())

    def as_dict(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "num_classes": self.num_classes, "pool_sizes": list(self.pool_sizes),
                "labels_sha256": self.labels_sha256}


# ----------------------------------------------------------------------------------- the file
@dataclass
class PicksFile:
    """A loaded, validated picks file."""

    path: str
    fingerprint: Fingerprint
    ks: tuple[int, ...]
    feature_dim: int
    picks: dict[int, torch.Tensor]
    centroids: dict[int, torch.Tensor] | None
    inertia: dict[int, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.fingerprint.num_classes

    def positions(self, class_id: int, k: int, pool_size: int | None = None) -> torch.Tensor:
        """The ``k`` pool positions of ``class_id`` (validated against ``pool_size`` if given)."""
        if not 0 <= int(class_id) < self.num_classes:
            raise PicksFileError(
                f"class {class_id} is not in picks file {self.path!r}: it covers classes 0..{self.num_classes - 1}"
            )
        expected = self.fingerprint.pool_sizes[int(class_id)]
        if pool_size is not None and int(pool_size) != expected:
            raise PicksFileError(
                f"picks file {self.path!r} was computed for a pool of {expected} items in class {class_id}; "
                f"found {pool_size} here. Rerun `dream-plugin precompute` on this data (pool order must be "
                "that of ImageDataset.class_indices())"
            )
        if int(k) not in self.picks:
            raise PicksFileError(
                f"K={k} is not in picks file {self.path!r}; available K: {', '.join(map(str, self.ks))} "
                f"(precompute with --k {k})"
            )
        return self.picks[int(k)][int(class_id)].clone()


def _require_fields(data: Mapping[str, Any], path: str, names: Iterable[str]) -> None:
    missing = [n for n in names if n not in data]
    if missing:
        raise PicksFileError(f"picks file {path!r} is incomplete: missing {', '.join(missing)}")


def _read(p: str) -> dict[str, Any]:
    """The raw dict of picks file ``p``, with its format, version, fields and shapes checked."""
    if not Path(p).is_file():
        raise FileNotFoundError(f"picks file {p!r} does not exist (write it with `dream-plugin precompute --out {p}`)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise PicksFileError(f"picks file {p!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PicksFileError(f"{p!r} is not a dream-plugin picks file (expected format {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise PicksFileError(
            f"picks file {p!r} has format version {version!r}; this dream-plugin reads version {FORMAT_VERSION}"
        )
    _require_fields(data, p, ("num_items", "num_classes", "pool_sizes", "labels_sha256", "ks", "feature_dim", "picks"))
    file_ks = tuple(int(k) for k in data["ks"])
    if set(data["picks"]) != set(file_ks):
        raise PicksFileError(f"picks file {p!r} is inconsistent: ks {list(file_ks)} but picks for {sorted(data['picks'])}")
    c = int(data["num_classes"])
    for k, t in data["picks"].items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (c, k):
            raise PicksFileError(f"picks file {p!r} is inconsistent: picks[{k}] should have shape ({c}, {k})")
    return data


def _check_labels(p: str, fp: Fingerprint, labels: torch.Tensor, num_classes: int | None) -> None:
    """The file's fingerprint against the labels of the data it is used with."""
    here = Fingerprint.from_labels(labels, num_classes if num_classes is not None else fp.num_classes)
    if here.num_items != fp.num_items:
        raise _mismatch(p, "a dataset of", f"{fp.num_items} items", f"{here.num_items}")
    if here.pool_sizes != fp.pool_sizes:
        diff = next(c for c, (a, b) in enumerate(zip(fp.pool_sizes, here.pool_sizes)) if a != b) if len(here.pool_sizes) == len(fp.pool_sizes) else None
        raise _mismatch(p, "per-class pool sizes", list(fp.pool_sizes)[:10], list(here.pool_sizes)[:10]
                        if diff is None else f"class {diff}: {here.pool_sizes[diff]} items instead of {fp.pool_sizes[diff]}")
    if here.labels_sha256 != fp.labels_sha256:
        raise _mismatch(p, "labels with sha256", fp.labels_sha256[:16] + "...",
                        here.labels_sha256[:16] + "... (same sizes, different label order)")


def _mismatch(p: str, what: str, expected: Any, found: Any) -> PicksFileError:
    return PicksFileError(f"picks file {p!r} was computed for {' '.join(filter(None, (what, str(expected))))}; found {found} here")


def load_picks(
    path: str | os.PathLike[str],
    *,
    num_items: int | None = None,
    num_classes: int | None = None,
    pool_sizes: Sequence[int] | None = None,
    labels: torch.Tensor | None = None,
    ks: Iterable[int] | None = None,
) -> PicksFile:
    """Load and validate a picks file; each expectation given is checked with a clear error."""
    p = str(path)
    data = _read(p)
    fp = Fingerprint(int(data["num_items"]), int(data["num_classes"]), tuple(int(s) for s in data["pool_sizes"]),
                     str(data["labels_sha256"]))
    file_ks = tuple(int(k) for k in data["ks"])
    if labels is not None:
        _check_labels(p, fp, labels, num_classes)
    if num_items is not None and int(num_items) != fp.num_items:
        raise _mismatch(p, "a dataset of", f"{fp.num_items} items", f"{num_items}")
    if num_classes is not None and int(num_classes) != fp.num_classes:
        raise _mismatch(p, "", f"{fp.num_classes} classes", f"{num_classes}")
    if pool_sizes is not None and tuple(int(s) for s in pool_sizes) != fp.pool_sizes:
        raise _mismatch(p, "per-class pool sizes", list(fp.pool_sizes)[:10], [int(s) for s in pool_sizes][:10])
    for k in ks or ():
        if int(k) not in file_ks:
            raise PicksFileError(f"K={k} is not in picks file {p!r}; available K: {', '.join(map(str, file_ks))}")
    return PicksFile(
        path=p, fingerprint=fp, ks=file_ks, feature_dim=int(data["feature_dim"]),
        picks={int(k): v.to(torch.int64) for k, v in data["picks"].items()},
        centroids=data.get("centroids"), inertia=data.get("inertia") or {},
        meta={k: data.get(k) for k in ("seed", "kmeans", "source", "n_iter")},
    )
