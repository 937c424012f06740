"""Pure-torch k-means of one problem: the batched engine (:mod:`.batched`) with a batch of one.

This is the default engine behind DREAM's representative matching. It runs on whatever device
``x`` lives on (CPU or CUDA), keeps memory bounded by chunking the assignment step, and never
touches torch's, NumPy's or Python's global random state: all randomness comes from an explicit
``torch.Generator``. Because it *is* the batched engine, a class clustered alone and the same class
clustered with others in :func:`~dream_plugin.engine.clustering.kmeans_batched` get the same result for
the same generator state.
"""

from __future__ import annotations

import dataclasses

import torch

from dream_plugin.engine.clustering.batched import kmeans_batched
from dream_plugin.engine.clustering.seeding import DEFAULT_SEEDING
from dream_plugin.engine.clustering.validation import (
    INIT_METHODS,
    PRECISIONS,
    KMeansResult,
    make_generator,
    matmul_precision,
    validate_common,
    validate_init,
    validate_x,
)

__all__ = ["INIT_METHODS", "PRECISIONS", "KMeansResult", "kmeans", "matmul_precision"]


def kmeans(
    x: torch.Tensor,
    n_clusters: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str | torch.Tensor = "k-means++",
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
    precision: str = "fp32",
    seeding: str = DEFAULT_SEEDING,
    n_local_trials: int | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``n_clusters`` groups with Lloyd's algorithm.

    * ``init``: ``'k-means++'`` (greedy, scikit-learn style), ``'k-means++-sampled'`` (the same
      on ``max(20 K, 1000)`` random rows), ``'random'`` (K distinct rows) or a ``(K, D)`` tensor
      on x's device (warm start).
    * ``precision``: ``'fp32'`` (default), or on CUDA ``'tf32'`` / ``'bf16'`` matrix products
      (see :data:`PRECISIONS`); the final labels and inertia are always float32.
    * ``seeding``: how k-means++ gets its distances (:mod:`.seeding`): ``'blocked'`` (default, on
      every device and batch size; small pools are seeded from their Gram matrix, see
      :func:`~.seeding.small_pool`), ``'pairwise'`` or ``'direct'`` (no host synchronisation: for
      accelerators). An explicit choice: nothing switches it by device or batch size.
    * ``n_local_trials``: k-means++ candidates per step; None (default) is scikit-learn's greedy
      ``2 + floor(ln K)``, 1 is classic k-means++ (less seeding work, more inertia: see
      docs/speed.md, "Seeding").
    * ``generator``: CPU (or x-device) ``torch.Generator`` that seeds the initialisation; same
      state gives the same result, ``None`` uses a fresh nondeterministic generator.
    * Stops when the labels no longer change, or when the summed squared centroid shift is
      <= ``tol * mean(var(x, dim=0))`` (scale-aware, like scikit-learn), or after ``max_iter``.
    * Data far from the origin are centred first (distances are translation invariant; the
      expansion ``|x|^2 - 2 x.c + |c|^2`` keeps its precision), see :mod:`.centring`.
    * Distances are computed in ``chunk_size``-row blocks so memory stays bounded; arithmetic is
      float32 at least (half inputs are upcast) and the centroids come back in x's dtype. Labels
      and inertia always match the returned centroids.
    """
    x = validate_x(x, check_finite=False).detach()  # never differentiated; NaN / inf: checked by the engine
    k, max_iter, tol, chunk_size = validate_common(x, n_clusters, max_iter, tol, chunk_size)
    init = validate_init(init, x, k)
    res = kmeans_batched(
        x.unsqueeze(0), k, max_iter=max_iter, tol=tol,
        init=init.unsqueeze(0) if isinstance(init, torch.Tensor) else init,
        generators=[make_generator(generator)], chunk_size=chunk_size, precision=precision, seeding=seeding,
        n_local_trials=n_local_trials,
    )
    return dataclasses.replace(res.result(0), backend="torch")
