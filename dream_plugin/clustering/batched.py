"""Batched k-means: several independent problems (e.g. every class of one re-selection) at once.

DREAM re-clusters every class of the dataset at the same moment. Clustering the classes one after
the other pays the per-call overhead (Python, kernel launches, small GEMMs) once per class; here
the ``B`` problems are stacked into one padded tensor ``(B, N_max, D)`` and every step - k-means++
seeding, the assignment (``|x|^2 - 2 x c^T + |c|^2`` as one ``baddbmm`` per row chunk) and the
centroid update - runs for all of them together.

Padding: problem ``b`` owns rows ``[0, lengths[b])``; the other rows are never sampled by the
seeding, never counted in a centroid, never part of the inertia and get label ``-1``.

Each problem draws its random numbers from its own ``torch.Generator`` exactly as
:func:`dream_plugin.clustering.kmeans` does, so a batched run makes the same choices as ``B``
separate runs up to floating-point rounding of the batched matrix products (results agree in
inertia; labels agree except on exact near-ties). Converged problems stop moving and leave the
batch (it is compacted), so a batch costs about what its slowest member costs, not ``B`` times it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .distances import TRANSPOSED_MAX_K, _check_chunk_size, compute_dtype
from .gram_lloyd import gram_lloyd
from .grouping import count_by_label, sum_by_label
from .centring import centre_far_problems
from .seeding import check_n_local_trials, choose_method, gram_matrix, greedy_kmeans_plusplus
from .kmeans import (
    KMeansResult,
    _as_int,
    _kmeans_plusplus_sampled,
    _make_generator,
    _update_centers,
    _validate_precision,
    matmul_precision,
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
    kk = _as_int(k, "n_clusters")
    if kk < 1 or kk > min(lens):
        raise ValueError(f"n_clusters must be between 1 and the smallest problem's rows ({min(lens)}), got {kk}")
    if generators is None or isinstance(generators, torch.Generator):
        base = _make_generator(generators)  # one generator: problems draw from it in turn
        gens = [base] * b
    else:
        gens = list(generators)  # type: ignore[arg-type]
        if len(gens) != b:
            raise ValueError(f"need one generator per problem ({b}), got {len(gens)}")
        gens = [_make_generator(g) for g in gens]
    return x, lens, kk, gens


def _row_mask(lens: list[int], n_max: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n_max, device=device).unsqueeze(0) < torch.tensor(lens, device=device).unsqueeze(1)


# --------------------------------------------------------------------------- #
# seeding
# --------------------------------------------------------------------------- #
def _kmeans_plusplus_batched(
    xf: torch.Tensor, x_sq: torch.Tensor, lens: list[int], k: int, gens: list[torch.Generator], method: str = "auto",
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ centres ``(B, K, D)`` for every problem at once (same draws as one by one).

    Padded rows carry zero weight, so they are never drawn and never count in the potential.
    """
    idx = greedy_kmeans_plusplus(xf, x_sq, k, gens, lens, method=method, n_local_trials=n_local_trials)
    return torch.gather(xf, 1, idx.unsqueeze(2).expand(-1, -1, xf.shape[2]))


def _random_init_batched(xf: torch.Tensor, lens: list[int], k: int, gens: list[torch.Generator]) -> torch.Tensor:
    rows = []
    for i, (n, g) in enumerate(zip(lens, gens)):
        idx = torch.randperm(n, generator=g, device=g.device)[:k].to(xf.device)
        rows.append(xf[i].index_select(0, idx))
    return torch.stack(rows)


# --------------------------------------------------------------------------- #
# Lloyd
# --------------------------------------------------------------------------- #
def _nearest_batched(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    c: torch.Tensor,
    rows: int,
    low: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per problem and row: nearest centroid and squared distance, in ``rows``-row chunks.

    ``low``: optional ``(bf16 centred rows, mean, squared norms of the centred rows)`` from
    :func:`_low_precision_copy`; the matrix product then runs in bfloat16 (GPU option).
    """
    b, n, _ = x.shape
    labels = torch.empty((b, n), dtype=torch.long, device=x.device)
    dist = torch.empty((b, n), dtype=x.dtype, device=x.device)
    if low is None:
        c_sq = c.square().sum(-1)  # (B, K)
        transposed = c.shape[1] <= TRANSPOSED_MAX_K
        c_t = c.transpose(1, 2)
        for s in range(0, n, rows):
            e = min(s + rows, n)
            if transposed:  # (B, K, rows): faster for few centroids (see distances.TRANSPOSED_MAX_K)
                blk = torch.baddbmm(c_sq.unsqueeze(2), c, x[:, s:e].transpose(1, 2), alpha=-2.0)
                vals, idx = blk.min(dim=1)
            else:
                blk = torch.baddbmm(c_sq.unsqueeze(1), x[:, s:e], c_t, alpha=-2.0)
                vals, idx = blk.min(dim=2)
            labels[:, s:e] = idx
            torch.add(vals, x_sq[:, s:e], out=dist[:, s:e])
    else:
        mm_x, mu, xc_sq = low
        cc = c - mu
        c_sq = cc.square().sum(-1).unsqueeze(1)
        c_t = cc.to(torch.bfloat16).transpose(1, 2)
        for s in range(0, n, rows):
            e = min(s + rows, n)
            blk = torch.bmm(mm_x[:, s:e], c_t).to(x.dtype).mul_(-2.0).add_(c_sq)
            vals, idx = blk.min(dim=2)
            labels[:, s:e] = idx
            torch.add(vals, xc_sq[:, s:e], out=dist[:, s:e])
    return labels, dist.clamp_(min=0)


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
    seeding: str = "auto",
    n_local_trials: int | None = None,
    overwrite_x: bool = False,
) -> BatchedKMeansResult:
    """k-means with ``n_clusters`` clusters for each of ``B`` padded problems ``x`` ``(B, N_max, D)``.

    * ``lengths``: real rows per problem (rows ``[0, lengths[b])``); None means no padding.
    * ``init``: ``'k-means++'``, ``'k-means++-sampled'``, ``'random'`` or a ``(B, K, D)`` tensor
      (warm start).
    * ``generators``: one ``torch.Generator`` per problem (same draws as separate
      :func:`~dream_plugin.clustering.kmeans` calls with those generators), a single generator
      (problems draw from it in turn) or None (nondeterministic).
    * Stopping, tolerance and empty-cluster handling are those of :func:`kmeans`, per problem.
    * ``chunk_size`` bounds the temporaries at about ``chunk_size * K`` elements (all problems
      together); ``precision``, ``seeding`` and ``n_local_trials`` as in :func:`kmeans`
      (``'bf16'`` / ``'tf32'`` are GPU options).
    * ``overwrite_x``: the caller's ``x`` is a scratch copy (as ``pad_problems`` makes), so problems
      far from the origin may be centred in place in it instead of in a copy of the whole batch
      (x's contents are then not the input any more). Off by default: ``x`` is never written.
    """
    x, lens, k, gens = _validate_batch(x, lengths, n_clusters, generators)
    mi = _as_int(max_iter, "max_iter")
    if mi < 1:
        raise ValueError(f"max_iter must be >= 1, got {mi}")
    tol = float(tol)
    if not tol >= 0 or math.isinf(tol):
        raise ValueError(f"tol must be a finite float >= 0, got {tol!r}")
    chunk_size = _check_chunk_size(chunk_size)
    precision = _validate_precision(precision)
    b, n_max, d = x.shape
    n_local_trials = check_n_local_trials(n_local_trials)
    method = choose_method(n_max, k, b, seeding, x.device.type, n_local_trials)  # validates seeding
    dev = x.device
    x = x.detach()
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
    # cheap screen first (a NaN/inf makes its row sum non-finite), exact check only if it fails
    if not bool(torch.isfinite(xf.sum(dim=2)).all()) and not bool(torch.isfinite(xf).all()):
        raise ValueError("x contains NaN or inf values in its real rows")
    # problems far from the origin are centred (see .centring); padded rows stay zero
    xf, x_sq, mu, mean_var = centre_far_problems(xf, lens, mask if padded else None, owned)
    # per-problem scale of the tolerance: mean feature variance over the real rows
    tol_abs = (tol * mean_var).tolist()

    gram = seeds = None
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (b, k, d):
            raise ValueError(f"init tensor must have shape (B, K, D) = {(b, k, d)}, got {tuple(init.shape)}")
        if init.device != dev:
            raise ValueError(f"init tensor must be on x's device {dev}, got {init.device}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init tensor contains NaN or inf values")
        centers = init.detach().to(xf.dtype)
        centers = centers - mu if mu is not None else centers.clone()
    elif init == "random":
        centers = _random_init_batched(xf, lens, k, gens)
    elif init == "k-means++" and precision == "fp32" and method == "pairwise":
        # small pools: the Gram matrix serves the seeding and then every Lloyd iteration
        gram = gram_matrix(xf)
        seeds = greedy_kmeans_plusplus(xf, x_sq, k, gens, lens, gram=gram, n_local_trials=n_local_trials)
        centers = None  # formed from the seed rows by _gram_fit
    elif init == "k-means++":
        centers = _kmeans_plusplus_batched(xf, x_sq, lens, k, gens, method, n_local_trials)
    elif init == "k-means++-sampled":
        centers = torch.stack(
            [
                _kmeans_plusplus_sampled(xf[i, :n], x_sq[i, :n], k, g, method, n_local_trials)
                for i, (n, g) in enumerate(zip(lens, gens))
            ]
        )
    else:
        raise ValueError(
            f"unknown init {init!r}; allowed: 'k-means++', 'k-means++-sampled', 'random' or a (B, K, D) tensor"
        )

    rows = max(1, chunk_size // b)
    fitted = None
    if gram is not None:
        fitted = _gram_fit(xf, x_sq, gram, seeds, mask, k, mi, tol_abs)
    if fitted is None:
        if centers is None:  # the Gram loop gave up (degenerate re-seeding): start over from the seeds
            centers = torch.gather(xf, 1, seeds.unsqueeze(2).expand(-1, -1, d))
        fitted = _direct_fit(xf, x_sq, mask, lens, centers, k, mi, tol_abs, chunk_size, precision)
    out_centers, n_iter, converged, assigned = fitted
    if assigned is not None:  # every problem stopped with unchanged labels: the last assignment is final
        labels, dist = assigned
    else:  # final E-step in full precision: labels / inertia are those of the returned centroids
        labels, dist = _nearest_batched(xf, x_sq, out_centers, rows)
    labels = labels.masked_fill_(~mask, -1)
    inertia = (dist * mask).sum(1, dtype=torch.float64).tolist()
    return BatchedKMeansResult(
        centroids=(out_centers + mu if mu is not None else out_centers).to(x.dtype),
        labels=labels,
        inertia=[float(v) for v in inertia],
        n_iter=n_iter,
        converged=converged,
        lengths=lens,
    )


def _gram_fit(
    xf: torch.Tensor, x_sq: torch.Tensor, gram: torch.Tensor, seeds: torch.Tensor, mask: torch.Tensor,
    k: int, max_iter: int, tol_abs: list[float],
) -> tuple[torch.Tensor, list[int], list[bool], tuple[torch.Tensor, torch.Tensor] | None] | None:
    """Lloyd on the Gram matrix from the seed rows (see :mod:`.gram_lloyd`)."""
    b, n, d = xf.shape
    rows = (seeds + torch.arange(b, device=xf.device).unsqueeze(1) * n).reshape(-1)
    # x_i . seed_k, (B, N, K): G is symmetric, so these are whole rows of G (a fast row gather)
    dots = gram.reshape(b * n, n).index_select(0, rows).view(b, -1, n).transpose(1, 2)
    centers = xf.reshape(b * n, d).index_select(0, rows).view(b, -1, d)
    padded = not bool(mask.all())
    return gram_lloyd(gram, xf, x_sq, dots, centers, mask if padded else None, max_iter, tol_abs)


def _direct_fit(
    xf: torch.Tensor, x_sq: torch.Tensor, mask: torch.Tensor, lens: list[int], centers: torch.Tensor, k: int,
    mi: int, tol_abs: list[float], chunk_size: int, precision: str,
) -> tuple[torch.Tensor, list[int], list[bool], tuple[torch.Tensor, torch.Tensor] | None]:
    """Lloyd with ``X C^T`` products; converged problems leave the batch.

    The last element is ``(labels, squared distances)`` to the returned centroids when every
    problem stopped with its labels unchanged in full float32 (see :func:`.gram_lloyd`), else None.
    """
    b = xf.shape[0]
    dev = xf.device
    rows = max(1, chunk_size // b)
    out_centers = centers.clone()
    n_iter = [0] * b
    converged = [False] * b
    active = list(range(b))  # problem ids still iterating, aligned with the working tensors
    wx, wsq, wmask, wc = xf, x_sq, mask, centers
    wtol = torch.tensor(tol_abs, dtype=torch.float64)
    prev_labels: torch.Tensor | None = None
    n_max = xf.shape[1]
    out_labels = torch.empty((b, n_max), dtype=torch.long, device=dev)
    out_dist = xf.new_empty((b, n_max))
    n_strict = 0  # problems that stopped with unchanged labels (their assignment is final)
    with matmul_precision(precision, dev):
        low = precision == "bf16" and dev.type == "cuda"
        lowp = _low_precision_copy(wx, wmask, lens, active) if low else None
        for it in range(mi):
            labels, dist = _nearest_batched(wx, wsq, wc, rows, lowp)
            sums, counts = sum_by_label(wx, labels, wmask, k, rows=rows), count_by_label(labels, wmask, k)
            new = sums / counts.clamp(min=1).unsqueeze(2).to(wx.dtype)
            empty = (counts == 0).any(dim=1)
            if bool(empty.any()):
                for j in empty.nonzero().flatten().tolist():
                    n_j = lens[active[j]]
                    new[j], _ = _update_centers(
                        wx[j, :n_j], labels[j, :n_j], dist[j, :n_j], wc[j], chunk_size
                    )
            shift = torch.linalg.vector_norm(new - wc, dim=(1, 2)).double().square_().cpu()
            same = torch.zeros(len(active), dtype=torch.bool)
            if prev_labels is not None:
                same = ((labels == prev_labels) | ~wmask).all(dim=1).cpu() & ~empty.cpu()
            done = same | (shift <= wtol)
            wc = torch.where(same.to(dev).view(-1, 1, 1), wc, new)  # same labels: same means
            for j, pid in enumerate(active):
                n_iter[pid] = it + 1
            finished = done.nonzero().flatten().tolist()
            if finished:
                for j in finished:
                    out_centers[active[j]] = wc[j]
                    converged[active[j]] = True
                    if bool(same[j]):
                        out_labels[active[j]], out_dist[active[j]] = labels[j], dist[j]
                        n_strict += 1
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    active = []
                    break
                kd = keep.to(dev)
                active = [active[j] for j in keep.tolist()]
                wx, wsq, wmask, wc = wx[kd], wsq[kd], wmask[kd], wc[kd]
                labels, wtol = labels[kd], wtol[keep]
                if lowp is not None:
                    lowp = _low_precision_copy(wx, wmask, lens, active)
            prev_labels = labels
        for j, pid in enumerate(active):  # max_iter reached
            out_centers[pid] = wc[j]
    exact = precision == "fp32" or dev.type != "cuda"  # tf32 / bf16 labels are recomputed in float32
    return out_centers, n_iter, converged, ((out_labels, out_dist) if n_strict == b and exact else None)


def _low_precision_copy(
    wx: torch.Tensor, wmask: torch.Tensor, lens: list[int], active: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bf16 copy of the centred rows, their mean and squared norms.

    Distances do not change under a shift; centring keeps the dot products small relative to
    the distances, which is what bfloat16's 8-bit mantissa needs.
    """
    n_real = torch.tensor([lens[p] for p in active], device=wx.device, dtype=wx.dtype)
    mu = wx.sum(1, keepdim=True) / n_real.view(-1, 1, 1)  # (B, 1, D), padded rows are zero
    xc = (wx - mu) * wmask.unsqueeze(2).to(wx.dtype)
    return xc.to(torch.bfloat16), mu, xc.square().sum(-1)
