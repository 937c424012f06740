"""Stratified matching: DREAM's clusters as strata, picks drawn at random in proportion to their size.

DREAM takes the item nearest each of K = n centroids, so a small outlying cluster weighs as much as
a large one, and the same n items serve ``interval`` calls. With a well-trained network its picks
carry larger gradients than the class on average (docs/findings.md). This strategy keeps DREAM's
clustering (same embedding, same k-means, re-clustered every ``interval`` calls) but uses the
clusters only as strata: every call draws a fresh systematic sample over the pool ordered by cluster
(random order inside each cluster, random start). Each item is picked with probability exactly
n / N, so the batch mean is an unbiased estimate of the class mean, as with random sampling, while
each cluster gets floor or ceil of n x (its share of the pool) picks, so every mode of the class is
covered in proportion to its size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..clustering.kmeans import KMeansResult
from ..config import ConfigError
from ..requests import SelectionRequest, SelectionResult
from .dream import DreamOptions, DreamStrategy, SelectionPlan


def proportional_draw(labels: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` distinct positions, each with probability exactly n / N, cluster counts proportional to size.

    Systematic sampling over the positions grouped by cluster (random order within each cluster,
    clusters in label order): step N / n, a uniform random start in [0, step).
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    size = int(labels.numel())
    if not 1 <= n <= size:
        raise ValueError(f"n: {n!r} is not allowed; expected 1 <= n <= {size} (the pool size)")
    perm = torch.randperm(size, generator=generator)
    order = perm[torch.argsort(labels[perm], stable=True)]
    step = size / n
    start = float(torch.rand((), generator=generator, dtype=torch.float64)) * step
    slots = torch.floor(start + step * torch.arange(n, dtype=torch.float64)).to(torch.int64).clamp_(max=size - 1)
    return order[slots].clone()


@dataclass(frozen=True)
class StratifiedOptions(DreamOptions):
    """Options of the ``stratified`` strategy (config section ``options.stratified``): DREAM's, without
    sub-sampling (each cluster already gets picks in proportion to its size)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subsample != 1:
            raise ConfigError(
                f"subsample: {self.subsample!r} is not allowed for 'stratified'; expected 1 (its clusters get "
                "picks in proportion to their size; DREAM+ sub-sampling is options.dream.subsample)"
            )


@dataclass
class _Strata:
    labels: torch.Tensor
    centroids: torch.Tensor
    calls: int = 0


class StratifiedStrategy(DreamStrategy):
    """DREAM's k-means clusters (K = n) as strata; each call draws n items in proportion to cluster size."""

    name = "stratified"
    description = ("stratified matching: DREAM's k-means clusters as strata, a fresh draw per call in "
                   "proportion to cluster size (every item has probability n/N)")
    Options = StratifiedOptions

    def __init__(self, options: StratifiedOptions | None = None) -> None:
        super().__init__(options)
        self._strata: dict[tuple[str, int, int, int], _Strata] = {}

    def reset(self) -> None:
        super().reset()
        self._strata.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"strata": {k: {"labels": v.labels, "centroids": v.centroids, "calls": v.calls}
                           for k, v in self._strata.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._strata = {k: _Strata(**v) for k, v in state.get("strata", {}).items()}
        self._embeddings.clear()

    def _plan(self, request: SelectionRequest) -> SelectionPlan:
        key = (request.kind, request.class_id, request.n, request.pool_size)
        strata = self._strata.get(key)
        plan = SelectionPlan(request=request, key=key, cached=None, s=1, k=request.n)
        if request.kind == "match" and strata is not None and strata.calls % self.options.interval != 0:
            strata.calls += 1
            positions = proportional_draw(strata.labels, request.n, request.generator)
            plan.answer = SelectionResult(positions=positions, reclustered=False)
        return plan

    def _finish(
        self, plan: SelectionPlan, feats: torch.Tensor, result: KMeansResult, embed_seconds: float, cluster_start: float,
        batched: int = 1,
    ) -> SelectionResult:
        labels = result.labels.to("cpu", torch.int64)  # each item's nearest final centroid
        if plan.request.kind == "match":
            self._strata[plan.key] = _Strata(labels=labels, centroids=result.centroids.detach(), calls=1)
        positions = proportional_draw(labels, plan.request.n, plan.request.generator)
        return SelectionResult(
            positions=positions,
            reclustered=True,
            kmeans_iterations=result.n_iter,
            inertia=result.inertia,
            embed_seconds=embed_seconds,
            cluster_seconds=time.perf_counter() - cluster_start,
            extra={"backend": result.backend, "clusters": plan.k, "batched_classes": batched,
                   "embedding_cached": embed_seconds == 0.0},
        )

    def _warm(self, plan: SelectionPlan, feats: torch.Tensor) -> torch.Tensor | None:
        strata = self._strata.get(plan.key)
        if self.options.warm_start and strata is not None and strata.centroids.shape == (plan.k, feats.shape[1]):
            return strata.centroids.to(feats.device, feats.dtype)
        return None
