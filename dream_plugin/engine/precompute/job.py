"""The resumable precompute job: cluster every class once and assemble the picks file.

Streaming: classes are processed one at a time; only the current class's features are in memory.
Each finished class is written atomically to a sidecar directory ``<out>.partial/``, its checksum
recorded in the manifest (see :mod:`.resume`); a rerun after an interruption skips the finished
classes and recomputes any file that is corrupt or foreign, and the final file is assembled (and written
atomically) only when every class is done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from dream_plugin.common.paths import check_writable_file
from dream_plugin.engine.precompute.picks import FORMAT, FORMAT_VERSION, Fingerprint
from dream_plugin.engine.clustering.options import KMeansOptions
from dream_plugin.engine.precompute.resume import class_file as _class_file
from dream_plugin.engine.precompute.resume import discard_untrusted, load_class, open_partial, save_class

logger = logging.getLogger(__name__)

_PARTIAL_SUFFIX = ".partial"


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"K: {k!r} is not allowed; expected integers >= 1 (e.g. --k 10 --k 50)")
        out.append(int(k))
    if not out:
        raise ValueError("no K given; pass at least one (e.g. --k 10)")
    return tuple(sorted(set(out)))


def partial_dir(out: str | os.PathLike[str]) -> Path:
    """The sidecar directory of finished classes for ``out``."""
    o = Path(out)
    return o.with_name(o.name + _PARTIAL_SUFFIX)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cluster_class(feats: torch.Tensor, c: int, ks: tuple[int, ...], seed: int, km: KMeansOptions,
                   keep_centroids: bool) -> dict[str, Any]:
    from dream_plugin.engine.clustering import nearest_unique, run_kmeans
    from dream_plugin.common.seeds import derive_seed

    if feats.dim() != 2:
        raise ValueError(f"features of class {c} must be 2-D (items, dim), got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"features of class {c} must be floating point, got {feats.dtype}")
    out: dict[str, Any] = {"class": c, "pool_size": int(feats.shape[0]), "feature_dim": int(feats.shape[1]),
                           "picks": {}, "centroids": {}, "inertia": {}, "n_iter": {}}
    for k in ks:
        if k > feats.shape[0]:
            raise ValueError(f"class {c} has {feats.shape[0]} items, fewer than K={k}; use K <= {feats.shape[0]}")
        gen = torch.Generator(device=feats.device).manual_seed(derive_seed(seed, "precompute", c, k))
        res = run_kmeans(feats, k, backend=km.backend, init=km.init, generator=gen, **km.engine_settings())
        pos, _ = nearest_unique(feats, res.centroids, chunk_size=km.chunk_size)
        out["picks"][k] = pos.to("cpu", torch.int64)
        if keep_centroids:
            out["centroids"][k] = res.centroids.detach().to("cpu", torch.float32)
        out["inertia"][k] = float(res.inertia)
        out["n_iter"][k] = int(res.n_iter)
    return out


@dataclass
class PrecomputeReport:
    """What a run did: the file, how many classes it computed or reused, and its cost."""

    path: str
    num_classes: int
    computed: list[int]
    reused: list[int]
    seconds: float
    peak_rss_mib: float
    feature_dim: int
    discarded: list[str] = field(default_factory=list)
    """Class files of the interrupted run that were corrupt or foreign: named, deleted and recomputed."""


def _peak_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux
def _check_job(fingerprint: Fingerprint, ks: tuple[int, ...], out_p: Path, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: {seed!r} is not allowed; expected an integer >= 0")
    if out_p.is_dir():
        raise ValueError(f"out: {str(out_p)!r} is a directory; give a file path such as picks.pt")
    small = [(c, s) for c, s in enumerate(fingerprint.pool_sizes) if s < max(ks)]
    if small:
        c, s = small[0]
        raise ValueError(
            f"class {c} has {s} items, fewer than K={max(ks)} ({len(small)} class(es) too small); "
            f"use K <= {min(s for _, s in small)}"
        )


def _compute_missing(features_of: Callable[[int], torch.Tensor], fingerprint: Fingerprint, d: Path,
                     ks: tuple[int, ...], seed: int, kmeans: KMeansOptions, save_centroids: bool,
                     progress: bool) -> tuple[list[int], list[int]]:
    """Cluster the classes without a finished file in ``d``; returns ``(computed, reused)``."""
    from tqdm.auto import tqdm

    done, todo = [], []
    for c in range(fingerprint.num_classes):
        (done if _class_file(d, c).is_file() else todo).append(c)
    if done:
        logger.info("%s: resuming an interrupted run, %d of %d classes already done", d, len(done), fingerprint.num_classes)
    bar = tqdm(total=fingerprint.num_classes, initial=len(done), desc="precompute", unit="class",
               disable=not progress, file=sys.stderr)
    try:
        for c in todo:
            feats = features_of(c)
            if not isinstance(feats, torch.Tensor):
                raise TypeError(f"features of class {c}: expected a tensor, got {type(feats).__name__}")
            if feats.dim() == 2 and feats.shape[0] != fingerprint.pool_sizes[c]:
                raise ValueError(
                    f"features of class {c}: {feats.shape[0]} rows, but its pool has {fingerprint.pool_sizes[c]} items"
                )
            result = _cluster_class(feats, c, ks, seed, kmeans, save_centroids)
            del feats
            save_class(d, c, result)  # atomic, and its checksum recorded in the manifest
            bar.update(1)
    finally:
        bar.close()
    return todo, done


def _assemble(d: Path, fingerprint: Fingerprint, ks: tuple[int, ...], save_centroids: bool) -> dict[str, Any]:
    """The per-class results of ``d`` gathered into the file's tensors (plus ``feature_dim``)."""
    picks = {k: torch.empty(fingerprint.num_classes, k, dtype=torch.int64) for k in ks}
    inertia = {k: torch.empty(fingerprint.num_classes, dtype=torch.float64) for k in ks}
    n_iter = {k: torch.empty(fingerprint.num_classes, dtype=torch.int64) for k in ks}
    centroids: dict[int, torch.Tensor] | None = {} if save_centroids else None
    dim = None
    for c in range(fingerprint.num_classes):
        part = load_class(d, c)
        if part.get("pool_size") != fingerprint.pool_sizes[c] or dim not in (None, part["feature_dim"]):
            raise ValueError(f"{str(_class_file(d, c))!r} does not belong to this job; delete {str(d)!r} and rerun")
        dim = part["feature_dim"]
        for k in ks:
            picks[k][c] = part["picks"][k]
            inertia[k][c] = part["inertia"][k]
            n_iter[k][c] = part["n_iter"][k]
            if centroids is not None:
                if k not in centroids:
                    centroids[k] = torch.empty(fingerprint.num_classes, k, dim, dtype=torch.float32)
                centroids[k][c] = part["centroids"][k]
    assert dim is not None
    return {"feature_dim": int(dim), "picks": picks, "centroids": centroids, "inertia": inertia, "n_iter": n_iter}


def run_precompute(
    features_of: Callable[[int], torch.Tensor],
    fingerprint: Fingerprint,
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    kmeans: KMeansOptions = KMeansOptions(),
    save_centroids: bool = True,
    source: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
) -> PrecomputeReport:
    """Cluster every class (``features_of(c)`` -> (pool_size_c, D)) and write the picks file ``out``.

    Resumable: finished classes live in ``<out>.partial/``; a rerun with the same job skips them.
    A partial directory from a different job (other data, K, seed, k-means settings) is an error
    unless ``restart=True``, which deletes it.
    """
    start = time.perf_counter()
    ks = _check_ks(ks)
    out_p = Path(out)
    _check_job(fingerprint, ks, out_p, seed)
    check_writable_file(out_p, "out (--out)")
    out_p.parent.mkdir(parents=True, exist_ok=True)
    job = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint.as_dict(), "ks": list(ks),
           "seed": seed, "kmeans": dataclasses.asdict(kmeans), "save_centroids": save_centroids,
           "source": dict(source or {})}
    d = partial_dir(out_p)
    open_partial(d, job, restart)
    discarded = discard_untrusted(d, fingerprint.num_classes)
    computed, reused = _compute_missing(features_of, fingerprint, d, ks, seed, kmeans, save_centroids, progress)
    tensors = _assemble(d, fingerprint, ks, save_centroids)
    data = {
        "format": FORMAT, "version": FORMAT_VERSION, **fingerprint.as_dict(), "ks": list(ks), **tensors,
        "seed": seed, "kmeans": job["kmeans"], "source": job["source"],
    }
    _atomic_save(data, out_p)
    shutil.rmtree(d)
    return PrecomputeReport(str(out_p), fingerprint.num_classes, computed, reused, time.perf_counter() - start,
                            _peak_rss_mib(), tensors["feature_dim"], discarded)
