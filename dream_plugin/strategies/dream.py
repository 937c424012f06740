"""DREAM: k-means in the live network's embedding space, the item nearest each centroid.

Picks are cached per (call kind, class, n) and re-clustered every ``interval`` calls for that
class, as the official code re-clusters every ``interval`` inner iterations. DREAM+ sub-sampling
(``subsample`` = s > 1) clusters into n/s groups and takes the s items nearest each centroid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..clustering import nearest_per_cluster, nearest_unique, run_kmeans
from ..config import ConfigError
from ..requests import SelectionRequest, SelectionResult
from .base import EmbeddingStrategy

KMEANS_BACKENDS = ("torch", "sklearn", "fast_pytorch_kmeans", "faiss")


@dataclass(frozen=True)
class KMeansOptions:
    """k-means settings shared by the clustering strategies."""

    max_iter: int = 100
    tol: float = 1e-4
    init: Literal["k-means++", "random"] = "k-means++"
    backend: Literal["torch", "sklearn", "fast_pytorch_kmeans", "faiss"] = "torch"
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ConfigError(f"max_iter: {self.max_iter!r} is not allowed; expected an integer >= 1")
        if self.tol < 0:
            raise ConfigError(f"tol: {self.tol!r} is not allowed; expected a number >= 0")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: {self.chunk_size!r} is not allowed; expected an integer >= 1")


@dataclass(frozen=True)
class DreamOptions:
    """Options of the ``dream`` strategy (config section ``options.dream``)."""

    interval: int = 10
    """Re-cluster a class every ``interval`` matching calls for it (1: every call)."""
    subsample: int = 1
    """DREAM+: s items nearest each of n/s centroids (s must divide n)."""
    warm_start: bool = False
    """Start k-means from the class's previous centroids when re-clustering."""
    kmeans: KMeansOptions = field(default_factory=KMeansOptions)

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ConfigError(f"interval: {self.interval!r} is not allowed; expected an integer >= 1")
        if self.subsample < 1:
            raise ConfigError(f"subsample: {self.subsample!r} is not allowed; expected an integer >= 1")


@dataclass
class _ClassCache:
    positions: torch.Tensor
    centroids: torch.Tensor
    calls: int = 0


class DreamStrategy(EmbeddingStrategy):
    """Representative matching: the pool items nearest the k-means centroids of the class."""

    name = "dream"
    description = "DREAM representative matching: k-means (K = n) on embeddings, item nearest each centroid"
    Options = DreamOptions

    def __init__(self, options: DreamOptions | None = None) -> None:
        super().__init__(options)
        self._cache: dict[tuple[str, int, int, int], _ClassCache] = {}

    def reset(self) -> None:
        self._cache.clear()

    def select(self, request: SelectionRequest) -> SelectionResult:
        opts: DreamOptions = self.options
        key = (request.kind, request.class_id, request.n, request.pool_size)
        cached = self._cache.get(key)
        reuse = request.kind == "match" and cached is not None and cached.calls % opts.interval != 0
        if reuse:
            cached.calls += 1
            return SelectionResult(positions=cached.positions.clone(), reclustered=False)

        s = opts.subsample if request.kind == "match" else 1
        if request.n % s != 0:
            raise ValueError(
                f"DREAM+ sub-sampling needs subsample to divide n: n={request.n} is not divisible by "
                f"subsample={s}; choose a subsample among the divisors of {request.n}: "
                + ", ".join(str(d) for d in range(1, request.n + 1) if request.n % d == 0)
            )
        feats, embed_seconds = self.embed_pool(request)
        start = time.perf_counter()
        k = request.n // s
        init: str | torch.Tensor = opts.kmeans.init
        if opts.warm_start and cached is not None and cached.centroids.shape == (k, feats.shape[1]):
            init = cached.centroids.to(feats.device, feats.dtype)
        result = run_kmeans(
            feats,
            k,
            backend=opts.kmeans.backend,
            max_iter=opts.kmeans.max_iter,
            tol=opts.kmeans.tol,
            init=init,
            generator=request.generator,
            chunk_size=opts.kmeans.chunk_size,
        )
        if s == 1:
            positions, dups = nearest_unique(feats, result.centroids, chunk_size=opts.kmeans.chunk_size)
        else:
            positions, dups = nearest_per_cluster(feats, result.centroids, s, chunk_size=opts.kmeans.chunk_size)
        positions = positions.to("cpu", torch.int64)
        cluster_seconds = time.perf_counter() - start
        if request.kind == "match":
            self._cache[key] = _ClassCache(positions=positions.clone(), centroids=result.centroids.detach(), calls=1)
        return SelectionResult(
            positions=positions,
            reclustered=True,
            kmeans_iterations=result.n_iter,
            inertia=result.inertia,
            duplicates_resolved=dups,
            embed_seconds=embed_seconds,
            cluster_seconds=cluster_seconds,
            extra={"backend": result.backend, "clusters": k, "subsample": s},
        )
