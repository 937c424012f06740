"""DREAM: k-means in the live network's embedding space, the item nearest each centroid.

Picks are cached per (call kind, class, n) and re-clustered every ``interval`` calls for that
class, as the official code re-clusters every ``interval`` inner iterations. DREAM+ sub-sampling
(``subsample`` = s > 1) clusters into n/s groups and takes the s items nearest each centroid.

Speed features (see docs/speed.md, "Selection speed"):

* ``embedding_cache`` (off by default: it keeps one pool of features per class): a class pool's embeddings are reused when the network (every parameter and
  buffer: same tensor object, data pointer and autograd version; same train/eval modes), the
  embedding function and the images are exactly those of the last embedding of that class
  (:mod:`dream_plugin.strategies._fingerprint`). An optimizer step or a BatchNorm running-stat
  update bumps a version counter and forces a fresh embedding pass.
* :meth:`DreamStrategy.select_many`: every class of one re-selection clustered as one padded,
  batched k-means problem (:func:`dream_plugin.engine.clustering.kmeans_batched`).
* ``warm_start``: start from the class's previous centroids.
* ``kmeans.precision``: ``tf32`` / ``bf16`` distance matmuls on GPU.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dream_plugin.engine.clustering import kmeans_batched, nearest_per_cluster, nearest_unique, pad_problems, run_kmeans
from dream_plugin.engine.clustering.kmeans import KMeansResult
from dream_plugin.engine.clustering.options import KMeansOptions
from dream_plugin.core.config import ConfigError
from dream_plugin.core.requests import SelectionRequest, SelectionResult
from dream_plugin.strategies._fingerprint import Fingerprint, fingerprint
from dream_plugin.strategies.base import EmbeddingStrategy

@dataclass(frozen=True)
class DreamOptions:
    """Options of the ``dream`` strategy (config section ``options.dream``)."""

    interval: int = 10
    """Re-cluster a class every ``interval`` matching calls for it (1: every call)."""
    subsample: int = 1
    """DREAM+: s items nearest each of n/s centroids (s must divide n)."""
    warm_start: bool = False
    """Start k-means from the class's previous centroids when re-clustering."""
    embedding_cache: bool = False
    """Reuse a class pool's embeddings while the network, embed function and images are unchanged."""
    batched: bool = True
    """select_many: cluster all classes of one re-selection as one batched k-means (torch backend)."""
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


@dataclass
class _EmbeddingEntry:
    fingerprint: Fingerprint
    pool: torch.Tensor
    feats: torch.Tensor


@dataclass
class _Plan:
    """What one request needs: a cached answer, or a re-clustering into ``k`` groups."""

    request: SelectionRequest
    key: tuple[str, int, int, int]
    cached: _ClassCache | None
    s: int = 1
    k: int = 0
    answer: SelectionResult | None = None


class DreamStrategy(EmbeddingStrategy):
    """Representative matching: the pool items nearest the k-means centroids of the class."""

    name = "dream"
    description = "DREAM representative matching: k-means (K = n) on embeddings, item nearest each centroid"
    Options = DreamOptions

    def __init__(self, options: DreamOptions | None = None) -> None:
        super().__init__(options)
        self._cache: dict[tuple[str, int, int, int], _ClassCache] = {}
        self._embeddings: dict[int, _EmbeddingEntry] = {}
        self.embedding_hits = 0
        self.embedding_misses = 0

    def reset(self) -> None:
        self._cache.clear()
        self._embeddings.clear()

    def state_dict(self) -> dict[str, Any]:
        """The per-class picks and their re-clustering counts (the embedding cache is rebuilt on demand:
        recomputed features are the same, only the time differs)."""
        return {"cache": {k: dataclasses.asdict(v) for k, v in self._cache.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cache = {k: _ClassCache(**v) for k, v in state.get("cache", {}).items()}
        self._embeddings.clear()

    # -- embeddings -------------------------------------------------------------------------------
    def embed_pool(self, request: SelectionRequest) -> tuple[torch.Tensor, float]:
        """The pool's embeddings: reused if nothing they depend on changed, else a fresh pass."""
        if not self.options.embedding_cache or request.network is None:
            return super().embed_pool(request)
        fp = fingerprint(
            request.network, request.embed, request.load, request.embed_batch_size, request.device
        )
        entry = self._embeddings.get(request.class_id)
        if (
            fp is not None
            and entry is not None
            and entry.fingerprint.matches(fp)
            and torch.equal(entry.pool, request.pool)
        ):
            self.embedding_hits += 1
            return entry.feats, 0.0
        self.embedding_misses += 1
        feats, seconds = super().embed_pool(request)
        if fp is None:
            self._embeddings.pop(request.class_id, None)
        else:
            self._embeddings[request.class_id] = _EmbeddingEntry(fp, request.pool.clone(), feats)
        return feats, seconds

    # -- planning ---------------------------------------------------------------------------------
    def _plan(self, request: SelectionRequest) -> _Plan:
        opts: DreamOptions = self.options
        key = (request.kind, request.class_id, request.n, request.pool_size)
        cached = self._cache.get(key)
        plan = _Plan(request=request, key=key, cached=cached)
        if request.kind == "match" and cached is not None and cached.calls % opts.interval != 0:
            cached.calls += 1
            plan.answer = SelectionResult(positions=cached.positions.clone(), reclustered=False)
            return plan
        s = opts.subsample if request.kind == "match" else 1
        if request.n % s != 0:
            raise ValueError(
                f"DREAM+ sub-sampling needs subsample to divide n: n={request.n} is not divisible by "
                f"subsample={s}; choose a subsample among the divisors of {request.n}: "
                + ", ".join(str(d) for d in range(1, request.n + 1) if request.n % d == 0)
            )
        plan.s, plan.k = s, request.n // s
        return plan

    def _warm(self, plan: _Plan, feats: torch.Tensor) -> torch.Tensor | None:
        c = plan.cached
        if self.options.warm_start and c is not None and c.centroids.shape == (plan.k, feats.shape[1]):
            return c.centroids.to(feats.device, feats.dtype)
        return None

    def _finish(
        self, plan: _Plan, feats: torch.Tensor, result: KMeansResult, embed_seconds: float, cluster_start: float,
        batched: int = 1,
    ) -> SelectionResult:
        chunk = self.options.kmeans.chunk_size
        if plan.s == 1:
            positions, dups = nearest_unique(feats, result.centroids, chunk_size=chunk)
        else:
            positions, dups = nearest_per_cluster(feats, result.centroids, plan.s, chunk_size=chunk)
        positions = positions.to("cpu", torch.int64)
        cluster_seconds = time.perf_counter() - cluster_start
        if plan.request.kind == "match":
            self._cache[plan.key] = _ClassCache(
                positions=positions.clone(), centroids=result.centroids.detach(), calls=1
            )
        return SelectionResult(
            positions=positions,
            reclustered=True,
            kmeans_iterations=result.n_iter,
            inertia=result.inertia,
            duplicates_resolved=dups,
            embed_seconds=embed_seconds,
            cluster_seconds=cluster_seconds,
            extra={
                "backend": result.backend, "clusters": plan.k, "subsample": plan.s,
                "embedding_cached": embed_seconds == 0.0, "batched_classes": batched,
            },
        )

    # -- one class --------------------------------------------------------------------------------
    def select(self, request: SelectionRequest) -> SelectionResult:
        plan = self._plan(request)
        if plan.answer is not None:
            return plan.answer
        return self._select_planned(plan)

    # -- every class of one re-selection ----------------------------------------------------------
    def select_many(self, requests: Sequence[SelectionRequest]) -> list[SelectionResult]:
        """Answer several requests (typically every class of one re-selection) together.

        Each request is answered as :meth:`select` would answer it (same cache, interval and
        generator), but the classes that need re-clustering are clustered as one padded batch
        (:func:`~dream_plugin.engine.clustering.kmeans_batched`, torch backend, ``batched: true``):
        one seeding loop and one Lloyd loop for all of them instead of one per class. Classes
        are grouped by (number of clusters, feature size, device, warm start or not).
        """
        opts: DreamOptions = self.options
        results: list[SelectionResult | None] = [None] * len(requests)
        todo: list[tuple[int, _Plan]] = []
        for i, req in enumerate(requests):
            plan = self._plan(req)
            if plan.answer is not None:
                results[i] = plan.answer
            else:
                todo.append((i, plan))
        if not (opts.batched and opts.kmeans.backend == "torch") or len(todo) < 2:
            for i, plan in todo:
                # plan was made already (call counters advanced): finish without re-planning
                results[i] = self._select_planned(plan)
            return results  # type: ignore[return-value]
        embedded = []
        for i, plan in todo:
            feats, secs = self.embed_pool(plan.request)
            embedded.append((i, plan, feats, secs))
        groups: dict[tuple, list] = {}
        for item in embedded:
            _, plan, feats, _ = item
            warm = self._warm(plan, feats)
            gkey = (plan.k, feats.shape[1], str(feats.device), warm is not None)
            groups.setdefault(gkey, []).append((*item, warm))
        for (k, _, _, is_warm), members in groups.items():
            start = time.perf_counter()
            x, lengths = pad_problems([m[2] for m in members])
            init = torch.stack([m[4] for m in members]) if is_warm else opts.kmeans.init
            res = kmeans_batched(
                x, k, lengths=lengths, init=init, generators=[m[1].request.generator for m in members],
                overwrite_x=True, **opts.kmeans.engine_settings(),  # x is pad_problems' own copy
            )
            shared = (time.perf_counter() - start) / len(members)
            for b, (i, plan, feats, secs, _) in enumerate(members):
                t0 = time.perf_counter() - shared  # each class carries its share of the batch
                results[i] = self._finish(plan, feats, res.result(b), secs, t0, batched=len(members))
        return results  # type: ignore[return-value]

    def _select_planned(self, plan: _Plan) -> SelectionResult:
        opts: DreamOptions = self.options
        request = plan.request
        feats, embed_seconds = self.embed_pool(request)
        start = time.perf_counter()
        warm = self._warm(plan, feats)
        result = run_kmeans(
            feats, plan.k, backend=opts.kmeans.backend, init=warm if warm is not None else opts.kmeans.init,
            generator=request.generator, **opts.kmeans.engine_settings(),
        )
        return self._finish(plan, feats, result, embed_seconds, start)
