"""Lloyd iterations on the Gram matrix, for pools small next to their feature size.

Every centroid Lloyd produces is the mean of a set of points, so with ``G = X X^T`` at hand

* ``x_i . c_k = (1/n_k) sum_{j in S_k} G[i, j]``: one row-sum of ``G`` per point and cluster,
  i.e. an ``index_add`` of the rows of ``G`` by label (``N^2`` additions, no ``N x D x K`` product);
An iteration then costs ``O(N^2 + N K + N D)`` instead of ``O(N D K)``: the means themselves are
still summed from ``X`` (``O(N D)``), so that ``|c_k|^2`` and the centroid shift of the tolerance
rule are computed exactly as the direct loop computes them. The seeding already builds ``G``
when the pool is small (:mod:`.seeding`), so the iterations come almost for free. It is the same
algorithm as :func:`.kmeans_batched`'s direct loop (assignment, mean update, empty clusters
re-seeded on the farthest points, same stopping rules); only the rounding of the distances differs.
"""

from __future__ import annotations

import torch

from .grouping import count_by_label, sum_by_label

__all__ = ["gram_lloyd"]


def _reseed_empty(
    labels: torch.Tensor, min_dist: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, bool]:
    """Members for the mean update: each empty cluster takes one of the farthest points.

    As in the direct loop: the ``e`` empty clusters of a problem take its ``e`` points farthest from
    their centroids, which leave the clusters they came from. Returns ``(members, ok)``; ``ok`` is
    False when a donor would be left empty (only possible with duplicate points), a case the
    direct loop handles by keeping the donor's old position, which a set of members cannot express.
    """
    members = labels.clone()
    empty = counts == 0
    dist = min_dist if mask is None else min_dist.masked_fill(~mask, -1.0)
    for j in empty.any(dim=1).nonzero().flatten().tolist():
        ids = empty[j].nonzero().flatten()
        far = torch.topk(dist[j], ids.numel(), largest=True, sorted=True).indices
        donors = labels[j, far]
        left = counts[j].clone()
        left.index_add_(0, donors, torch.full_like(donors, -1))
        if bool((left[donors] <= 0).any()):
            return members, False
        members[j, far] = ids
    return members, True


def gram_lloyd(
    gram: torch.Tensor,
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    dots: torch.Tensor,
    centers: torch.Tensor,
    mask: torch.Tensor | None,
    max_iter: int,
    tol_abs: list[float],
) -> tuple[torch.Tensor, list[int], list[bool], tuple[torch.Tensor, torch.Tensor] | None] | None:
    """Run Lloyd from the starting centroids; return ``(centroids (B, K, D), n_iter, converged, assigned)``.

    ``assigned`` is ``(labels (B, N), squared distances (B, N))`` to the returned centroids when
    every problem stopped because its labels no longer changed (then the last assignment already
    belongs to the returned centroids and the caller can skip a final one), else None.

    ``gram`` ``(B, N, N)`` and ``xf`` ``(B, N, D)`` the problems; ``x_sq`` ``(B, N)``; ``dots``
    ``(B, N, K)`` = ``x_i . c_k`` for the starting ``centers`` ``(B, K, D)``; ``mask`` ``(B, N)``
    real rows (None: no padding). Distances come from the Gram matrix; the means themselves are
    summed from ``xf`` (an ``O(N D)`` pass, as the direct loop does it), so the centroid shift of
    the tolerance rule is computed exactly as there, with no cancellation. Returns None when an
    empty cluster cannot be re-seeded as the direct loop would (see :func:`_reseed_empty`); the
    caller then runs the direct loop.
    """
    b, n, k = dots.shape
    n_iter = [0] * b
    converged = [False] * b
    done = torch.zeros(b, dtype=torch.bool)
    strict = torch.zeros(b, dtype=torch.bool)  # stopped with labels unchanged
    out_labels = torch.empty((b, n), dtype=torch.long, device=xf.device)
    out_dist = xf.new_empty((b, n))
    prev_labels: torch.Tensor | None = None
    tol_t = torch.tensor(tol_abs, dtype=torch.float64)
    x_sq_col = x_sq.unsqueeze(2)
    c_sq = torch.linalg.vector_norm(centers, dim=-1).square_()
    # scratch buffers reused by every iteration (on the CPU a fresh multi-megabyte tensor costs
    # page faults each time): the new centroids and dot products are written into the spare half
    # of a pair of buffers, which then swap with the current ones
    dist = xf.new_empty((b, n, k))
    gram_buf = xf.new_empty((b * k + 1, n)) if xf.device.type == "cpu" else None
    x_buf = xf.new_empty((b * k + 1, xf.shape[2])) if xf.device.type == "cpu" else None
    centers = centers.contiguous()
    spare_centers = torch.empty_like(centers)
    diff = torch.empty_like(centers)
    spare_dots = xf.new_empty((b, k, n))  # stored (B, K, N); used through its (B, N, K) transpose
    for it in range(max_iter):
        torch.add(x_sq_col, c_sq.unsqueeze(1), out=dist).add_(dots, alpha=-2.0)  # (B, N, K)
        min_dist, labels = dist.min(dim=2)
        min_dist.clamp_(min=0)
        counts = count_by_label(labels, mask, k)
        has_empty = (counts == 0).any(dim=1)
        new_members, ok = _reseed_empty(labels, min_dist, counts, mask) if bool(has_empty.any()) else (labels, True)
        if not ok:
            return None
        if has_empty.any():
            counts = count_by_label(new_members, mask, k)
        denom = counts.clamp(min=1).to(gram.dtype).unsqueeze(2)  # (B, K, 1)
        new_centers = torch.div(sum_by_label(xf, new_members, mask, k, buf=x_buf), denom, out=spare_centers)
        # new dot products: rows of G summed by cluster (G is symmetric), over the cluster's size
        new_dots = torch.div(sum_by_label(gram, new_members, mask, k, buf=gram_buf), denom, out=spare_dots)
        new_dots = new_dots.transpose(1, 2)
        shift = torch.linalg.vector_norm(torch.sub(new_centers, centers, out=diff), dim=(1, 2))
        shift = shift.double().square_().cpu()
        same = torch.zeros(b, dtype=torch.bool)
        if prev_labels is not None:
            same = (labels == prev_labels)
            if mask is not None:
                same |= ~mask
            same = same.all(dim=1).cpu() & ~has_empty.cpu()
        active = ~done
        for j in active.nonzero().flatten().tolist():
            n_iter[j] = it + 1
        # a problem whose labels did not change keeps its (identical) centroids
        new_c_sq = torch.linalg.vector_norm(new_centers, dim=-1).square_()
        keep = same | done
        if bool(keep.any()):
            kept = keep.nonzero().flatten().to(gram.device)
            new_centers[kept] = centers[kept]
            new_dots[kept] = dots[kept]
            new_c_sq[kept] = c_sq[kept]
        # swap: this iteration's buffers become the spares the next one writes into
        spare_centers, centers = centers, new_centers
        spare_dots, dots = dots.transpose(1, 2), new_dots
        c_sq = new_c_sq
        finished = active & (same | (shift <= tol_t))
        for j in finished.nonzero().flatten().tolist():
            converged[j] = True
            if bool(same[j]):
                out_labels[j], out_dist[j] = labels[j], min_dist[j]
        strict |= finished & same
        done |= finished
        if bool(done.all()):
            break
        prev_labels = labels
    return centers, n_iter, converged, ((out_labels, out_dist) if bool(strict.all()) else None)
