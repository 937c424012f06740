"""Turn k-means centroids into *unique* dataset items (DREAM's representative picks).

DREAM replaces each centroid by the real item nearest to it.  Two centroids can
share the same nearest item, which would silently give fewer than K distinct
representatives; these helpers resolve such collisions deterministically: the
centroid closer to the contested item keeps it, the other takes its next
nearest item that is still unused.

Precision: items and centroids are shifted by the same vector, the items' mean, before any
distance is computed (see :func:`_centred_frame`). ``|x|^2 - 2 x.c + |c|^2`` on uncentred float32
features (ReLU features of a trained network can sit thousands of units from the origin) loses
the digits that tell neighbours apart to cancellation; after the shift the arithmetic is as
precise as for data at the origin, so the picks do not depend on where the data sit.
"""

from __future__ import annotations

import torch

from dream_plugin.engine.clustering.distances import check_chunk_size, check_pair, compute_dtype, row_sq_norms

__all__ = ["nearest_unique", "nearest_per_cluster"]


def _validate(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int) -> None:
    check_pair(x, centroids, "x", "centroids")
    check_chunk_size(chunk_size)
    if x.shape[0] == 0:
        raise ValueError(f"x must contain at least one row, got shape {tuple(x.shape)}")
    if centroids.shape[0] == 0:
        raise ValueError(f"centroids must contain at least one row, got shape {tuple(centroids.shape)}")
    for name, t in (("x", x), ("centroids", centroids)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf values")


def _centred_frame(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``centroids`` in the compute dtype, both minus the items' mean (distances unchanged).

    The mean is summed in float64 and rounded once; x and the centroids lose the same rounded
    vector, so its rounding error shifts everything alike and changes no distance.
    """
    dt = compute_dtype(torch.promote_types(x.dtype, centroids.dtype))
    xd, cd = x.detach(), centroids.detach()
    mu = (xd.sum(dim=0, keepdim=True, dtype=torch.float64) / xd.shape[0]).to(dt)
    return xd.to(dt) - mu, cd.to(dt) - mu


def _split_winners(best: torch.Tensor, best_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split centroids into winners (keep their best item) and losers.

    Among centroids sharing a best item the closest one wins (ties: lowest
    centroid index).  Losers are returned ordered by ascending distance to
    their best item (ties: lowest index), the order in which they re-pick.
    """
    k = best.numel()
    idx = torch.arange(k, device=best.device)
    # lexicographic sort by (best item, distance, centroid index) via stable sorts
    o1 = torch.sort(best_d, stable=True).indices
    o2 = torch.sort(best[o1], stable=True).indices
    order = o1[o2]
    sorted_best = best[order]
    first = torch.ones(k, dtype=torch.bool, device=best.device)
    first[1:] = sorted_best[1:] != sorted_best[:-1]
    winners = order[first]
    loser_mask = torch.ones(k, dtype=torch.bool, device=best.device)
    loser_mask[winners] = False
    losers = idx[loser_mask]
    losers = losers[torch.sort(best_d[losers], stable=True).indices]
    return winners, losers


def _repick(
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    cf: torch.Tensor,
    losers: torch.Tensor,
    used: torch.Tensor,
    picks: torch.Tensor,
    chunk_size: int,
) -> None:
    """Give each loser (in order) its nearest unused item; updates ``used``/``picks`` in place.

    Distance rows are computed for blocks of losers so the temporary stays at
    about ``chunk_size * 64`` elements (at least one row).
    """
    n = xf.shape[0]
    if losers.numel() == 0:
        return
    block = max(1, (chunk_size * 64) // max(n, 1))
    inf = torch.tensor(float("inf"), dtype=xf.dtype, device=xf.device)
    loser_list = losers.tolist()
    for b0 in range(0, len(loser_list), block):
        ids = loser_list[b0 : b0 + block]
        c = cf[ids]
        rows = torch.addmm(x_sq.unsqueeze(0), c, xf.t(), alpha=-2.0)  # (b, N) without |c|^2
        for r, ci in enumerate(ids):
            row = torch.where(used, inf, rows[r])
            j = int(torch.argmin(row))
            if bool(used[j]):  # all remaining distances overflowed to inf: take first unused
                j = int((~used).nonzero()[0, 0])
            used[j] = True
            picks[ci] = j


def _nearest_item(
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    cf: torch.Tensor,
    c_sq: torch.Tensor,
    used: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each centroid, its nearest item of x not in ``used`` (index, squared distance).

    Scans x in ``chunk_size``-row blocks keeping a running column minimum, so
    the temporary is ``(chunk_size, K)`` like :func:`nearest_centroid`.  Ties go
    to the lowest item index.
    """
    n, k = xf.shape[0], cf.shape[0]
    best_d = torch.full((k,), float("inf"), dtype=xf.dtype, device=xf.device)
    best = torch.zeros(k, dtype=torch.long, device=xf.device)
    c_t = cf.t()
    x_sq_col = x_sq.unsqueeze(1)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        # (B, K) = |x|^2 - 2 x c^T; |c|^2 is constant per column and added at the end
        blk = torch.addmm(x_sq_col[start:stop], xf[start:stop], c_t, alpha=-2.0)
        if used is not None:
            blk.masked_fill_(used[start:stop].unsqueeze(1), float("inf"))
        vals, idx = torch.min(blk, dim=0)
        better = vals < best_d
        best_d = torch.where(better, vals, best_d)
        best = torch.where(better, idx + start, best)
    return best, (best_d + c_sq).clamp_(min=0)


def _assign_round(
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    cf: torch.Tensor,
    c_sq: torch.Tensor,
    used: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, int]:
    """One item per centroid, avoiding ``used`` items (updated in place).

    Returns ``(picks (K,), number of centroids that lost their nearest unused
    item to a closer centroid)``.
    """
    best, best_d = _nearest_item(xf, x_sq, cf, c_sq, used if bool(used.any()) else None, chunk_size)
    winners, losers = _split_winners(best, best_d)
    overflow = torch.isinf(best_d[winners])
    if bool(overflow.any()):  # no finite distance at all (huge values): let _repick fall back
        losers = torch.cat([losers, winners[overflow]])
        winners = winners[~overflow]
    picks = torch.empty_like(best)
    picks[winners] = best[winners]
    used[best[winners]] = True
    _repick(xf, x_sq, cf, losers, used, picks, chunk_size)
    return picks, int(losers.numel())


def nearest_unique(
    x: torch.Tensor, centroids: torch.Tensor, *, chunk_size: int = 4096
) -> tuple[torch.Tensor, int]:
    """One distinct item of ``x`` per centroid: its nearest, with collisions resolved.

    Returns ``(picks, n_duplicates_resolved)``: ``picks`` is ``(K,)`` int64
    row positions into ``x`` (all distinct, ``picks[k]`` belongs to centroid k)
    and the count is the number of centroids that lost their nearest item to a
    closer centroid and took their next nearest unused item instead (0 means
    picks equal the plain arg-min).  Losers re-pick in ascending order of the
    distance to their nearest item, so the result is deterministic.  Requires
    ``K <= N``.
    """
    _validate(x, centroids, chunk_size)
    n, k = x.shape[0], centroids.shape[0]
    if k > n:
        raise ValueError(f"cannot pick {k} distinct items from x with only {n} rows (need K <= N)")
    xf, cf = _centred_frame(x, centroids)
    used = torch.zeros(n, dtype=torch.bool, device=x.device)
    return _assign_round(xf, row_sq_norms(xf), cf, row_sq_norms(cf), used, chunk_size)


def nearest_per_cluster(
    x: torch.Tensor, centroids: torch.Tensor, per_cluster: int, *, chunk_size: int = 4096
) -> tuple[torch.Tensor, int]:
    """``per_cluster`` distinct items per centroid, globally unique (DREAM+ sub-sampling).

    Works in ``per_cluster`` rounds; in each round every centroid takes its
    nearest still-unused item, collisions resolved as in :func:`nearest_unique`.
    Returns ``(picks, n_duplicates_resolved)`` with ``picks`` of shape
    ``(K * per_cluster,)``, grouped by centroid (``picks[k*s:(k+1)*s]`` belong
    to centroid k, nearest first).  The count is the number of picks that fall
    outside their centroid's own ``per_cluster`` nearest items because another
    centroid took them.  Requires ``K * per_cluster <= N``.
    """
    _validate(x, centroids, chunk_size)
    if isinstance(per_cluster, bool) or not isinstance(per_cluster, int):
        raise TypeError(f"per_cluster must be an int >= 1, got {per_cluster!r}")
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    n, k = x.shape[0], centroids.shape[0]
    if k * per_cluster > n:
        raise ValueError(
            f"cannot pick {k} x {per_cluster} = {k * per_cluster} distinct items from x with only {n} rows"
        )
    xf, cf = _centred_frame(x, centroids)
    x_sq, c_sq = row_sq_norms(xf), row_sq_norms(cf)
    used = torch.zeros(n, dtype=torch.bool, device=x.device)
    rounds = []
    for _ in range(per_cluster):
        picks, n_lost = _assign_round(xf, x_sq, cf, c_sq, used, chunk_size)
        rounds.append(picks)
    picks = torch.stack(rounds, dim=1)  # (K, s)
    if per_cluster == 1:
        n_dup = n_lost
    else:
        own = _own_topk(xf, x_sq, cf, c_sq, per_cluster, chunk_size)  # (K, s)
        inside = (picks.unsqueeze(2) == own.unsqueeze(1)).any(dim=2)
        n_dup = int((~inside).sum())
    return picks.reshape(-1), n_dup


def _own_topk(
    xf: torch.Tensor, x_sq: torch.Tensor, cf: torch.Tensor, c_sq: torch.Tensor, s: int, chunk_size: int
) -> torch.Tensor:
    """Each centroid's ``s`` nearest items ignoring the others, in chunks of centroids."""
    k = cf.shape[0]
    out = torch.empty(k, s, dtype=torch.long, device=xf.device)
    x_t = xf.t()
    for start in range(0, k, chunk_size):
        stop = min(start + chunk_size, k)
        d = torch.addmm(x_sq.unsqueeze(0), cf[start:stop], x_t, alpha=-2.0)
        out[start:stop] = torch.topk(d, s, dim=1, largest=False, sorted=True).indices
    return out
