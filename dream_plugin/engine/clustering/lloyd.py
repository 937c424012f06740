"""The engine's one Lloyd loop, over a padded batch of problems (a single problem is a batch of one).

Each iteration assigns every row to its nearest centroid (``|x|^2 - 2 x c^T + |c|^2`` as one
``baddbmm`` per row chunk, or in bfloat16 on centred rows with ``precision='bf16'`` on CUDA),
replaces each centroid by the mean of its rows, and re-seeds empty clusters on the farthest rows
as scikit-learn does. A problem stops when its labels no longer change or its centroid shift is
within its tolerance; stopped problems leave the batch once half of it has stopped (it is then
compacted), so a batch costs about what its slowest member costs. Every step treats each problem
alone: its rows, its labels and its sums are the same whether it runs alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dream_plugin.engine.clustering.distances import TRANSPOSED_MAX_K
from dream_plugin.engine.clustering.grouping import count_by_label, flat_bins, sum_by_label
from dream_plugin.engine.clustering.small_pools import rows_of
from dream_plugin.engine.clustering.validation import matmul_precision

__all__ = ["LloydOutcome", "LoopOptions", "PaddedRows", "Start", "assign", "lloyd", "update_with_empty_clusters"]

Assignment = tuple[torch.Tensor, torch.Tensor]
"""``(labels, squared distances)`` of every row to a set of centroids."""


@dataclass(frozen=True)
class PaddedRows:
    """A padded batch of problems in the engine's frame: rows ``x`` ``(B, N, D)``, their squared
    norms ``sq`` ``(B, N)``, the real rows ``mask`` ``(B, N)`` and each problem's real row count."""

    x: torch.Tensor
    sq: torch.Tensor
    mask: torch.Tensor
    lens: list[int]

    def take(self, ids: list[int], m: int) -> PaddedRows:
        """The problems ``ids``, cut to their first ``m`` rows (views when that is all of them)."""
        return PaddedRows(rows_of(self.x, ids, m), rows_of(self.sq, ids, m), rows_of(self.mask, ids, m),
                          [self.lens[i] for i in ids])


@dataclass(frozen=True)
class LoopOptions:
    """The checked options of the Lloyd loop: clusters per problem, iteration cap, rows per
    chunk of the products and sums, and the products' arithmetic (:data:`~.validation.PRECISIONS`)."""

    k: int
    max_iter: int
    chunk_size: int
    precision: str


@dataclass(frozen=True)
class Start:
    """Where the loop starts: ``centers`` ``(B, K, D)``; the rows' ``assignment`` to them when the
    seeding computed it (the first iteration then skips its product; fp32 only); ``seed_rows``
    ``(B, K)`` when the centres are rows of the data (the Gram path reads their dot products)."""

    centers: torch.Tensor
    assignment: Assignment | None = None
    seed_rows: torch.Tensor | None = None

    def take(self, ids: list[int], m: int, k: int) -> Start:
        """The start of the problems ``ids`` cut to ``m`` rows."""
        first = None if self.assignment is None else (rows_of(self.assignment[0], ids, m), rows_of(self.assignment[1], ids, m))
        seeds = None if self.seed_rows is None else rows_of(self.seed_rows, ids, k)
        return Start(rows_of(self.centers, ids, k), first, seeds)


@dataclass(frozen=True)
class LloydOutcome:
    """What the loop returns: ``centers`` ``(B, K, D)``, per problem ``n_iter`` and ``converged``,
    and the rows' ``assignment`` to the returned centres when every problem stopped with unchanged
    float32 labels (then no final assignment is needed), else None."""

    centers: torch.Tensor
    n_iter: list[int]
    converged: list[bool]
    assignment: Assignment | None


def assign(
    x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor, rows: int,
    low: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per problem and row: nearest centroid and squared distance, in ``rows``-row chunks.

    ``low``: optional ``(bf16 centred rows, mean, squared norms of the centred rows)`` from
    :func:`_low_precision_copy`; the matrix product then runs in bfloat16 (GPU option).
    """
    b, n, _ = x.shape
    if low is None:
        c_sq = c.square().sum(-1)  # (B, K)
        if n <= rows:  # one chunk: no output buffers to fill
            return _assign_block(x, x_sq, c, c_sq)
    labels = torch.empty((b, n), dtype=torch.long, device=x.device)
    dist = torch.empty((b, n), dtype=x.dtype, device=x.device)
    if low is None:
        for s in range(0, n, rows):
            e = min(s + rows, n)
            labels[:, s:e], dist[:, s:e] = _assign_block(x[:, s:e], x_sq[:, s:e], c, c_sq)
        return labels, dist
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


def _assign_block(
    x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance of the rows ``x`` ``(B, rows, D)``: one product, one minimum.

    Up to :data:`~.distances.TRANSPOSED_MAX_K` centroids the product is ``c x^T`` (K x rows), which
    is faster for few centroids.
    """
    if c.shape[1] <= TRANSPOSED_MAX_K:
        vals, idx = torch.baddbmm(c_sq.unsqueeze(2), c, x.transpose(1, 2), alpha=-2.0).min(dim=1)
    else:
        vals, idx = torch.baddbmm(c_sq.unsqueeze(1), x, c.transpose(1, 2), alpha=-2.0).min(dim=2)
    return idx, vals.add_(x_sq).clamp_(min=0)


def update_with_empty_clusters(
    xf: torch.Tensor, labels: torch.Tensor, min_dist: torch.Tensor, centers: torch.Tensor, chunk_size: int,
) -> torch.Tensor:
    """New centroids of one problem ``(N, D)`` that has empty clusters.

    The empty clusters are re-seeded on the points farthest from their centroid (distinct points,
    one per empty cluster), which leave the cluster they came from, as scikit-learn does; a donor
    that lost its only point keeps its previous position.
    """
    k = centers.shape[0]
    counts = torch.bincount(labels, minlength=k)
    sums = sum_by_label(xf.unsqueeze(0), labels.unsqueeze(0), None, k, rows=chunk_size)[0]
    empty_ids = (counts == 0).nonzero().flatten()
    far = torch.topk(min_dist, empty_ids.numel(), largest=True, sorted=True).indices
    far_x = xf.index_select(0, far)
    donors = labels.index_select(0, far)
    sums.index_add_(0, donors, far_x, alpha=-1)
    counts.index_add_(0, donors, torch.full_like(donors, -1))
    sums[empty_ids] = far_x
    counts[empty_ids] = 1
    new = sums.div_(counts.clamp(min=1).to(xf.dtype).unsqueeze(1))
    return torch.where((counts > 0).unsqueeze(1), new, centers)


class _Direct:
    """Distances as products ``X C^T`` (row chunks), or in bfloat16 on centred rows (GPU option)."""

    def __init__(self, xf: torch.Tensor, x_sq: torch.Tensor, mask: torch.Tensor, lens: list[int],
                 chunk_size: int, low: bool) -> None:
        self.xf, self.x_sq, self.mask, self.lens, self.chunk_size, self.low = xf, x_sq, mask, lens, chunk_size, low
        self.lowp = _low_precision_copy(xf, mask, lens, list(range(xf.shape[0]))) if low else None

    def assign(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return assign(self.xf, self.x_sq, c, max(1, self.chunk_size // self.xf.shape[0]), self.lowp)

    def moved(self, c: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, empty: list[bool]) -> None:
        """The centroids are now ``c``: nothing to carry over for products."""

    def select(self, kd: torch.Tensor, active: list[int]) -> None:
        self.xf, self.x_sq, self.mask = self.xf[kd], self.x_sq[kd], self.mask[kd]
        if self.lowp is not None:
            self.lowp = _low_precision_copy(self.xf, self.mask, self.lens, active)


class _Gram:
    """Distances from the Gram matrix ``G = X X^T``, for pools small next to their feature size.

    Every centroid is a mean of rows, so ``x_i . c_k`` is a mean of entries of ``G`` over the
    cluster: one ``index_add`` of ``G``'s rows by label (``N^2`` additions) replaces the
    ``N x D x K`` product. Problems whose centroids are not plain means (an empty cluster's donor
    kept its old position) get their dot products by one direct product instead.
    """

    def __init__(self, xf: torch.Tensor, x_sq: torch.Tensor, mask: torch.Tensor, gram: torch.Tensor,
                 c: torch.Tensor, seed_rows: torch.Tensor | None = None) -> None:
        self.xf, self.x_sq, self.mask, self.gram = xf, x_sq, mask, gram
        self.padded = not bool(mask.all())
        if seed_rows is not None:  # the starting centroids are rows of xf: their dot products are columns of G
            self.dots = torch.gather(gram, 2, seed_rows.unsqueeze(1).expand(-1, gram.shape[1], -1))
        else:
            self.dots = torch.bmm(xf, c.transpose(1, 2))  # (B, N, K) for the starting centroids
        self.c_sq = c.square().sum(-1)

    def assign(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = (self.x_sq.unsqueeze(2) + self.c_sq.unsqueeze(1)).add_(self.dots, alpha=-2.0)
        dist, labels = d.min(dim=2)
        return labels, dist.clamp_(min=0)

    def moved(self, c: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, empty: list[bool]) -> None:
        """The centroids are now ``c``: the means of ``labels``' clusters, except for the problems
        with ``empty`` clusters (their re-seeded centroids get a direct product)."""
        k = counts.shape[1]
        sums = sum_by_label(self.gram, labels, self.mask if self.padded else None, k)  # (B, K, N)
        self.dots = sums.div_(counts.clamp(min=1).unsqueeze(2).to(sums.dtype)).transpose(1, 2)
        for j in (j for j, e in enumerate(empty) if e):
            self.dots[j] = self.xf[j] @ c[j].t()
        self.c_sq = c.square().sum(-1)

    def select(self, kd: torch.Tensor, active: list[int]) -> None:
        self.xf, self.x_sq, self.mask, self.gram = self.xf[kd], self.x_sq[kd], self.mask[kd], self.gram[kd]
        self.dots, self.c_sq = self.dots[kd], self.c_sq[kd]


def lloyd(
    rows: PaddedRows, start: Start, tol_abs: list[float], options: LoopOptions, gram: torch.Tensor | None = None,
) -> LloydOutcome:
    """Lloyd iterations from ``start`` for the padded problems ``rows``.

    ``tol_abs`` is each problem's absolute tolerance on the summed squared centroid shift.
    ``gram``: the problems' ``X X^T`` ``(B, N, N)`` to take the distances from (fp32 only; see
    :class:`_Gram`), else products.
    """
    xf, x_sq, mask, lens = rows.x, rows.sq, rows.mask, rows.lens
    centers, first_assignment, seed_rows = start.centers, start.assignment, start.seed_rows
    k, max_iter, chunk_size, precision = options.k, options.max_iter, options.chunk_size, options.precision
    dev = xf.device
    out = _Outcome(centers, xf.shape[1])
    fp32 = precision == "fp32"
    with matmul_precision(precision, dev):
        dists = _Gram(xf, x_sq, mask, gram, centers, seed_rows) if gram is not None and fp32 else \
            _Direct(xf, x_sq, mask, lens, chunk_size, precision == "bf16" and dev.type == "cuda")
        work = _Working(xf, mask, centers, tol_abs, dists)
        for it in range(max_iter):
            labels, dist = first_assignment if it == 0 and first_assignment is not None and fp32 else dists.assign(work.c)
            new, counts, empty = work.means(labels, dist, k, lens, chunk_size)
            same, done = work.stopped(new, labels, empty)
            out.iterated(work, it + 1)
            if any(done):
                out.finished(work, done, same, new, labels, dist)
                kept = work.retire(done, new, labels, counts, empty)
                if kept is None:
                    break
                new, labels, counts, empty = kept
            # every problem still iterating moved to its new centroids: plain means unless it had empty clusters
            dists.moved(new, labels, counts, [e and live for e, live in zip(empty, work.live)])
            work.c, work.prev_labels = new, labels
        out.unfinished(work)  # max_iter reached
    exact = fp32 or dev.type != "cuda"  # tf32 / bf16 labels are recomputed in float32
    return out.outcome(exact)


class _Working:
    """The working tensors of the Lloyd loop: slot ``j`` holds problem ``ids[j]``.

    A problem that stops keeps its slot (its later work is wasted, its results are already taken)
    until at least half of the slots have stopped; then the tensors are compacted. That is about
    log2(B) copies of the batch instead of one per stopping problem.
    """

    def __init__(self, xf: torch.Tensor, mask: torch.Tensor, c: torch.Tensor, tol_abs: list[float], dists) -> None:
        self.x, self.c, self.tols, self.dists = xf, c, list(tol_abs), dists
        self.mask = mask if not bool(mask.all()) else None  # None: no padded rows
        self.ids = list(range(xf.shape[0]))
        self.live = [True] * len(self.ids)
        self.prev_labels: torch.Tensor | None = None

    def means(self, labels: torch.Tensor, dist: torch.Tensor, k: int, lens: list[int], chunk_size: int):
        """New centroids ``(B, K, D)``, the cluster counts and which problems had empty clusters."""
        bins = flat_bins(labels, self.mask, k)
        counts = count_by_label(labels, self.mask, k, bins=bins)
        # the sums' row chunks do not depend on the batch size: a problem's means are the same alone and in a batch
        new = sum_by_label(self.x, labels, self.mask, k, rows=chunk_size, bins=bins)
        new = new.div_(counts.clamp(min=1).unsqueeze(2).to(self.x.dtype))
        empty = (counts == 0).any(dim=1).tolist()
        for j in (j for j, (e, live) in enumerate(zip(empty, self.live)) if e and live):
            n_j = lens[self.ids[j]]
            new[j] = update_with_empty_clusters(self.x[j, :n_j], labels[j, :n_j], dist[j, :n_j], self.c[j], chunk_size)
        return new, counts, empty

    def stopped(self, new: torch.Tensor, labels: torch.Tensor, empty: list[bool]) -> tuple[list[bool], list[bool]]:
        """Per slot: labels unchanged (and no empty cluster), and stopped (unchanged or shift within tolerance)."""
        shift = [v * v for v in torch.linalg.vector_norm(new - self.c, dim=(1, 2)).tolist()]  # summed squared shift
        if self.prev_labels is None:
            same = [False] * len(self.ids)
        else:
            eq = labels == self.prev_labels
            if self.mask is not None:
                eq |= ~self.mask
            same = [s and not e for s, e in zip(eq.all(dim=1).tolist(), empty)]
        done = [live and (s or sh <= t) for live, s, sh, t in zip(self.live, same, shift, self.tols)]
        return same, done

    def retire(self, done: list[bool], new: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
               empty: list[bool]):
        """Mark the ``done`` slots as stopped; when half the slots have, compact the batch and this
        iteration's per-slot results ``(new, labels, counts, empty)``. Returns those results, or None
        when no problem is left."""
        self.live = [live and not d for live, d in zip(self.live, done)]
        n_live = sum(self.live)
        if not n_live:
            return None
        if 2 * (len(self.live) - n_live) < len(self.live):
            return new, labels, counts, empty
        keep = [j for j, live in enumerate(self.live) if live]
        kd = torch.tensor(keep, device=self.x.device)
        self.ids, self.live, self.tols = [self.ids[j] for j in keep], [True] * n_live, [self.tols[j] for j in keep]
        self.x, self.c = self.x[kd], self.c[kd]
        self.mask = self.mask[kd] if self.mask is not None else None
        self.dists.select(kd, self.ids)
        return new[kd], labels[kd], counts[kd], [empty[j] for j in keep]


class _Outcome:
    """What the Lloyd loop returns, filled in as problems stop."""

    def __init__(self, centers: torch.Tensor, n_max: int) -> None:
        b = centers.shape[0]
        self.centers = centers.clone()
        self.n_iter, self.converged = [0] * b, [False] * b
        self.labels = torch.empty((b, n_max), dtype=torch.long, device=centers.device)
        self.dist = centers.new_empty((b, n_max))
        self.n_strict = 0  # problems that stopped with unchanged labels (their assignment is final)

    def iterated(self, work: _Working, n: int) -> None:
        for pid, live in zip(work.ids, work.live):
            if live:
                self.n_iter[pid] = n

    def finished(self, work: _Working, done: list[bool], same: list[bool], new: torch.Tensor,
                 labels: torch.Tensor, dist: torch.Tensor) -> None:
        for j in (j for j, d in enumerate(done) if d):
            pid = work.ids[j]
            self.centers[pid] = work.c[j] if same[j] else new[j]  # same labels: same means
            self.converged[pid] = True
            if same[j]:
                self.labels[pid], self.dist[pid] = labels[j], dist[j]
                self.n_strict += 1

    def unfinished(self, work: _Working) -> None:
        for j, (pid, live) in enumerate(zip(work.ids, work.live)):
            if live:
                self.centers[pid] = work.c[j]

    def outcome(self, exact: bool) -> LloydOutcome:
        strict = self.n_strict == len(self.n_iter) and exact
        return LloydOutcome(self.centers, self.n_iter, self.converged, (self.labels, self.dist) if strict else None)


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
