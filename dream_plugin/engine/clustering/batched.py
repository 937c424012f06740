"""Batched k-means: several independent problems (e.g. every class of one re-selection) at once.

DREAM re-clusters every class of the dataset at the same moment. Clustering the classes one after
the other pays the per-call overhead (Python, kernel launches, small GEMMs) once per class; here
the ``B`` problems are stacked into one padded tensor ``(B, N_max, D)`` and every step - k-means++
seeding (:mod:`.seeding`), the Lloyd iterations (:mod:`.lloyd`) - runs for all of them together.
:func:`dream_plugin.engine.clustering.kmeans` is this engine with a batch of one.

Padding: problem ``b`` owns rows ``[0, lengths[b])``; the other rows are never sampled by the
seeding, never counted in a centroid, never part of the inertia and get label ``-1``.

Each problem draws its random numbers from its own ``torch.Generator``, and every setting
(seeding method, candidates per step, chunking of the sums) means the same for a problem alone
and in a batch, so a class gets the same clustering from ``kmeans`` and from ``kmeans_batched``
for the same generator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dream_plugin.engine.clustering.centring import centre_far_problems
from dream_plugin.common.inputs import as_int
from dream_plugin.engine.clustering.distances import check_chunk_size, compute_dtype
from dream_plugin.engine.clustering.lloyd import LloydOutcome, LoopOptions, PaddedRows, Start, assign, lloyd
from dream_plugin.engine.clustering.small_pools import SmallPoolGrams
from dream_plugin.engine.clustering.seeding import DEFAULT_SEEDING, blocked_seeds, check_n_local_trials, check_seeding, initial_centres, sampled_size, small_pool
from dream_plugin.engine.clustering.validation import (
    KMeansResult, check_finite_rows, check_init_name, check_max_iter, check_tol, make_generator, validate_precision,
)

__all__ = ["BatchedKMeansResult", "kmeans_batched", "pad_problems"]


@dataclass(frozen=True)
class BatchedKMeansResult:
    """Outcome of :func:`kmeans_batched` for ``B`` problems.

    ``centroids`` ``(B, K, D)`` in x's dtype; ``labels`` ``(B, N_max)`` int64 with ``-1`` on padded
    rows; ``inertia``, ``n_iter`` and ``converged`` are per-problem lists; ``lengths`` the number of
    real rows of each problem.
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: list[float]
    n_iter: list[int]
    converged: list[bool]
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.inertia)

    def result(self, b: int) -> KMeansResult:
        """Problem ``b`` as a plain :class:`KMeansResult` (labels without padding)."""
        return KMeansResult(
            centroids=self.centroids[b],
            labels=self.labels[b, : self.lengths[b]],
            inertia=self.inertia[b],
            n_iter=self.n_iter[b],
            converged=self.converged[b],
            backend="torch-batched",
        )

    def results(self) -> list[KMeansResult]:
        return [self.result(b) for b in range(len(self))]


def pad_problems(xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 2-D tensors ``(N_b, D)`` into a zero-padded ``(B, N_max, D)`` tensor and its lengths."""
    if len(xs) == 0:
        raise ValueError("need at least one problem")
    d = xs[0].shape[1] if xs[0].dim() == 2 else None
    for i, t in enumerate(xs):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"problem {i} must be a (N, {d}) tensor, got {getattr(t, 'shape', type(t))}")
        if t.device != xs[0].device:
            raise ValueError("all problems must be on the same device")
    lengths = torch.tensor([t.shape[0] for t in xs], dtype=torch.long)
    n_max = int(lengths.max())
    out = xs[0].new_zeros((len(xs), n_max, d))
    for i, t in enumerate(xs):
        out[i, : t.shape[0]] = t.detach()
    return out, lengths


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _validate_batch(
    x: object, lengths: object, k: object, generators: object
) -> tuple[torch.Tensor, list[int], int, list[torch.Generator]]:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (B, N_max, D) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    b, n_max, _ = x.shape
    if b == 0 or n_max == 0:
        raise ValueError(f"x must hold at least one problem with one row, got shape {tuple(x.shape)}")
    if lengths is None:
        lens = [n_max] * b
    else:
        lens = [int(v) for v in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != b:
            raise ValueError(f"lengths must have one entry per problem ({b}), got {len(lens)}")
        if any(n < 1 or n > n_max for n in lens):
            raise ValueError(f"every length must be in [1, {n_max}], got {lens}")
    kk = as_int(k, "n_clusters")
    if kk < 1 or kk > min(lens):
        raise ValueError(f"n_clusters must be between 1 and the smallest problem's rows ({min(lens)}), got {kk}")
    if generators is None or isinstance(generators, torch.Generator):
        base = make_generator(generators)  # one generator: problems draw from it in turn
        gens = [base] * b
    else:
        gens = list(generators)  # type: ignore[arg-type]
        if len(gens) != b:
            raise ValueError(f"need one generator per problem ({b}), got {len(gens)}")
        gens = [make_generator(g) for g in gens]
    return x, lens, kk, gens


@dataclass(frozen=True)
class EngineOptions:
    """The checked options of one engine call (the same rules as :func:`~.kmeans`'s)."""

    k: int
    max_iter: int
    tol: float
    chunk_size: int
    precision: str
    seeding: str
    n_local_trials: int | None

    @property
    def loop(self) -> LoopOptions:
        return LoopOptions(self.k, self.max_iter, self.chunk_size, self.precision)


def _validate_options(
    k: int, max_iter: object, tol: object, chunk_size: object, precision: object, seeding: object,
    n_local_trials: object, init: object,
) -> EngineOptions:
    mi, tol_f = check_max_iter(max_iter), check_tol(tol)
    check_init_name(init, "(B, K, D)")
    return EngineOptions(k, mi, tol_f, check_chunk_size(chunk_size),  # type: ignore[arg-type]
                         validate_precision(precision), check_seeding(seeding), check_n_local_trials(n_local_trials))


def _row_mask(lens: list[int], n_max: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n_max, device=device).unsqueeze(0) < torch.tensor(lens, device=device).unsqueeze(1)



def _prepare_rows(x: torch.Tensor, lens: list[int], overwrite_x: bool) -> tuple[PaddedRows, torch.Tensor | None, torch.Tensor]:
    """Compute-dtype rows with zero padding, centred when far from the origin (see :mod:`.centring`).

    Returns ``(rows, subtracted means or None, mean feature variance)``.
    """
    dev = x.device
    b, n_max, _ = x.shape
    mask = _row_mask(lens, n_max, dev)
    xf = x.to(compute_dtype(x.dtype))
    owned = bool(overwrite_x) or xf.data_ptr() != x.data_ptr()  # xf may be written in place
    padded = not bool(mask.all())
    if padded:  # padded rows: 0
        if owned:
            xf.masked_fill_(~mask.unsqueeze(2), 0)
        else:
            xf = torch.where(mask.unsqueeze(2), xf, torch.zeros((), dtype=xf.dtype, device=dev))
            owned = True
    check_finite_rows(xf)  # padded rows are zero by now: only real rows can fail
    xf, x_sq, mu, mean_var = centre_far_problems(xf, lens, mask if padded else None, owned)
    return PaddedRows(xf, x_sq, mask, lens), mu, mean_var


def _start(
    init: str | torch.Tensor, rows: PaddedRows, gens: list[torch.Generator], mu: torch.Tensor | None,
    options: EngineOptions, grams: SmallPoolGrams,
) -> Start:
    """The starting centroids ``(B, K, D)`` in the (possibly centred) frame of ``rows``, with the
    rows' assignment to them and the seeds' row indices when the seeding computed them (``'blocked'``)."""
    xf, x_sq, lens, k = rows.x, rows.sq, rows.lens, options.k
    b, _, d = xf.shape
    if isinstance(init, str) and init == "k-means++-sampled" and all(sampled_size(k) >= n for n in lens):
        init = "k-means++"  # no problem is larger than the sample: the same draws and seeds as k-means++
    if isinstance(init, str) and init == "k-means++" and options.seeding == "blocked":
        idx, labels, dist = blocked_seeds(xf, x_sq, lens, k, gens, options.n_local_trials, grams)
        return Start(torch.gather(xf, 1, idx.unsqueeze(2).expand(-1, -1, d)), (labels, dist), idx)
    if not isinstance(init, torch.Tensor):
        return Start(initial_centres(xf, x_sq, lens, k, gens, init, options.seeding, options.n_local_trials))
    if tuple(init.shape) != (b, k, d):
        raise ValueError(f"init tensor must have shape (B, K, D) = {(b, k, d)}, got {tuple(init.shape)}")
    if init.device != xf.device:
        raise ValueError(f"init tensor must be on x's device {xf.device}, got {init.device}")
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init tensor contains NaN or inf values")
    centers = init.detach().to(xf.dtype)
    return Start(centers - mu if mu is not None else centers.clone())


def kmeans_batched(
    x: torch.Tensor,
    n_clusters: int,
    *,
    lengths: Sequence[int] | torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str | torch.Tensor = "k-means++",
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
    chunk_size: int = 4096,
    precision: str = "fp32",
    seeding: str = DEFAULT_SEEDING,
    n_local_trials: int | None = None,
    overwrite_x: bool = False,
) -> BatchedKMeansResult:
    """k-means with ``n_clusters`` clusters for each of ``B`` padded problems ``x`` ``(B, N_max, D)``.

    * ``lengths``: real rows per problem (rows ``[0, lengths[b])``); None means no padding.
    * ``init``: ``'k-means++'``, ``'k-means++-sampled'``, ``'random'`` or a ``(B, K, D)`` tensor
      (warm start).
    * ``generators``: one ``torch.Generator`` per problem (same draws as separate
      :func:`~dream_plugin.engine.clustering.kmeans` calls with those generators), a single generator
      (problems draw from it in turn) or None (nondeterministic).
    * Stopping, tolerance and empty-cluster handling are those of :func:`kmeans`, per problem.
    * ``chunk_size`` bounds the assignment's temporaries at about ``chunk_size * K`` elements (all
      problems together); ``precision``, ``seeding`` and ``n_local_trials`` as in :func:`kmeans`
      (``'bf16'`` / ``'tf32'`` are GPU options).
    * ``overwrite_x``: the caller's ``x`` is a scratch copy (as ``pad_problems`` makes), so problems
      far from the origin may be centred in place in it instead of in a copy of the whole batch
      (x's contents are then not the input any more). Off by default: ``x`` is never written.
    """
    x, lens, k, gens = _validate_batch(x, lengths, n_clusters, generators)
    options = _validate_options(k, max_iter, tol, chunk_size, precision, seeding, n_local_trials, init)
    x = x.detach()
    rows, mu, mean_var = _prepare_rows(x, lens, overwrite_x)
    tol_abs = (options.tol * mean_var).tolist()  # per problem: the mean feature variance over its real rows
    small = [b for b, n in enumerate(lens) if small_pool(n, k)] if options.precision == "fp32" else []
    grams = SmallPoolGrams(rows.x, lens, small)
    start = _start(init, rows, gens, mu, options, grams)
    fitted = _fit(rows, start, tol_abs, options.loop, grams)
    if fitted.assignment is not None:  # every problem stopped with unchanged labels: the last assignment is final
        labels, dist = fitted.assignment
    else:  # final assignment in full precision: labels / inertia are those of the returned centroids
        labels, dist = assign(rows.x, rows.sq, fitted.centers, max(1, options.chunk_size // x.shape[0]))
    mask, out_centers = rows.mask, fitted.centers
    labels = labels.masked_fill_(~mask, -1)
    inertia = (dist * mask).sum(1, dtype=torch.float64).tolist()
    return BatchedKMeansResult(
        centroids=(out_centers + mu if mu is not None else out_centers).to(x.dtype),
        labels=labels,
        inertia=[float(v) for v in inertia],
        n_iter=fitted.n_iter,
        converged=fitted.converged,
        lengths=lens,
    )


def _fit(rows: PaddedRows, start: Start, tol_abs: list[float], options: LoopOptions, grams: SmallPoolGrams) -> LloydOutcome:
    """The Lloyd loop for every problem: the small ones (``grams.small``) on their Gram matrices,
    the others by products; each problem gets the same treatment alone and in a batch."""
    xf, mask, lens, k = rows.x, rows.mask, rows.lens, options.k
    b = xf.shape[0]
    small_set = set(grams.small)
    groups = [(grams.small, True), ([i for i in range(b) if i not in small_set], False)]
    groups = [(ids, use_gram) for ids, use_gram in groups if ids]
    out_centers = start.centers.clone()
    n_iter, converged = [0] * b, [False] * b
    labels = torch.empty(mask.shape, dtype=torch.long, device=xf.device)
    dist = xf.new_empty(mask.shape)
    all_assigned = True
    for ids, use_gram in groups:
        n_g = max(lens[i] for i in ids)
        sub_start = start.take(ids, n_g, k)
        if not use_gram:
            sub_start = Start(sub_start.centers, sub_start.assignment)  # seed rows serve the Gram path only
        res = lloyd(rows.take(ids, n_g), sub_start, [tol_abs[i] for i in ids], options,
                    gram=grams.stack(ids, n_g) if use_gram else None)
        if len(groups) == 1 and n_g == xf.shape[1]:  # every problem in this group, at full length
            return res
        for j, i in enumerate(ids):
            out_centers[i], n_iter[i], converged[i] = res.centers[j], res.n_iter[j], res.converged[j]
        if res.assignment is None:
            all_assigned = False
        else:
            sel = torch.tensor(ids, device=xf.device)
            labels[sel, :n_g], dist[sel, :n_g] = res.assignment
            labels[sel, n_g:], dist[sel, n_g:] = 0, 0
    return LloydOutcome(out_centers, n_iter, converged, (labels, dist) if all_assigned else None)
