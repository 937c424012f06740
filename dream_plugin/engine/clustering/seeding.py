"""Greedy k-means++ seeding, for one problem or a padded batch of problems.

The seeding is sequential: each of the K steps draws ``L = 2 + floor(ln K)`` candidates with
probability proportional to the squared distance to the closest centre chosen so far, and keeps
the one that lowers the potential most (scikit-learn's greedy variant; ``n_local_trials`` sets
``L``, and ``L = 1`` is classic k-means++). Each step needs the
squared distances from every point to its candidates. Three ways to get them:

* ``'direct'``: one skinny matrix product ``candidates @ x^T`` per step. It reads all of ``x``
  K times, so on large pools the seeding is bound by memory bandwidth.
* ``'pairwise'``: the Gram matrix ``X X^T`` once (one large, efficient matrix product), then each
  step only gathers ``L`` of its rows. It wins when the pool is small next to the
  work of the steps (``N`` below a few times ``K * L``), and its memory is ``B * N^2`` floats.
* ``'blocked'`` (default): candidates are proposed up to :data:`BLOCK` at a time from the weights of the
  moment, their distance rows computed in one efficient product, and each step takes its ``L``
  candidates from that block by rejection sampling: a proposal drawn with the older weight
  ``w_ref`` is accepted with probability ``w_now / w_ref`` (weights only shrink as centres are
  added), so accepted candidates follow exactly the current k-means++ distribution. The product
  runs near peak speed instead of re-reading ``x`` every step. A pool so small that its blocks
  would cover it several times over (:func:`small_pool`) is seeded the ``'pairwise'`` way
  instead. Each problem is seeded on its own rows, and that rule looks at the problem's own size
  only, so a problem's seeds are the same alone and in a batch.

``'direct'`` and ``'pairwise'`` make the same choices for the same generator state, up to
floating-point rounding; ``'blocked'`` draws from the same distribution with a different use of
the random stream. The method is always the caller's explicit choice (default ``'direct'``, see
:data:`DEFAULT_SEEDING`), never a function of the device or the batch size, so one seed gives the
same seeds for a problem alone and in any batch. All randomness comes from the problems' own
``torch.Generator`` objects; global random state is never used.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch

from dream_plugin.engine.clustering.small_pools import SmallPoolGrams, rows_of

__all__ = [
    "BLOCK", "DEFAULT_SEEDING", "GRAM_MAX_ROWS", "SEEDING_METHODS", "blocked_seeds", "blocked_seeds_and_assignment", "small_pool", "check_n_local_trials",
    "check_seeding", "gram_matrix", "greedy_kmeans_plusplus", "initial_centres", "kmeans_plusplus", "n_trials_for",
    "sampled_size",
]

#: Accepted values of ``method`` (``seeding=`` in the k-means entry points).
SEEDING_METHODS = ("direct", "pairwise", "blocked")

#: The default, on every device and batch size (see docs/speed.md, "Seeding"): the fastest
#: on the CPU for small and large pools alike. ``'direct'`` avoids the rejection step's host
#: synchronisations on accelerators; ``'pairwise'`` is the Gram-matrix variant of ``'direct'``.
DEFAULT_SEEDING = "blocked"

#: Most candidates ``'blocked'`` proposes at once (fewer when fewer steps remain).
BLOCK = 128

#: Largest pool :func:`small_pool` can call small (its ``N x N`` matrix: 64 MiB of float32).
GRAM_MAX_ROWS = 4096


def small_pool(n: int, k: int) -> bool:
    """Whether a problem of ``n`` rows and ``k`` clusters is small enough for the Gram matrix.

    True when ``n < 3 (K - 1) (2 + ln K)`` (the greedy seeding's work in rows, weighted by the
    lower speed of its skinny products) and ``n <= GRAM_MAX_ROWS``. Then ``'blocked'`` seeds the
    ``'pairwise'`` way (its blocks would cover the pool several times over) and the Lloyd loop
    takes its distances from ``X X^T``. The rule reads the problem's own size only, never the
    device or the batch, so a problem is clustered the same way alone and in a batch.
    """
    return n <= GRAM_MAX_ROWS and n < 3 * (k - 1) * n_trials_for(k)

def check_n_local_trials(n_local_trials: object) -> int | None:
    """Validate ``n_local_trials``: None (the default rule) or an integer >= 1."""
    if n_local_trials is None:
        return None
    if isinstance(n_local_trials, bool) or not isinstance(n_local_trials, numbers.Integral) or n_local_trials < 1:
        raise ValueError(f"n_local_trials must be None or an integer >= 1, got {n_local_trials!r}")
    return int(n_local_trials)


def n_trials_for(k: int, n_local_trials: int | None = None) -> int:
    """Candidates per greedy step: ``n_local_trials``, or ``2 + floor(ln K)`` (scikit-learn's rule) when None.

    1 is classic (non-greedy) k-means++: about ``2 + ln K`` times less seeding work, at some cost in
    inertia (docs/speed.md, "Selection speed").
    """
    if n_local_trials is None:
        return 2 + int(math.log(k))
    return check_n_local_trials(n_local_trials)  # type: ignore[return-value]


def check_seeding(method: object) -> str:
    """Validate a seeding method. ``'auto'`` (earlier releases) is accepted with a FutureWarning
    and means :data:`DEFAULT_SEEDING`: it used to pick by pool size, batch size and device, so
    the same seed could seed a class differently alone and in a batch."""
    if method == "auto":
        warnings.warn(
            f"seeding='auto' is deprecated and now means {DEFAULT_SEEDING!r}; pass one of "
            f"{', '.join(map(repr, SEEDING_METHODS))}", FutureWarning, stacklevel=3,
        )
        return DEFAULT_SEEDING
    if method not in SEEDING_METHODS:
        raise ValueError(f"seeding method must be one of {', '.join(map(repr, SEEDING_METHODS))}, got {method!r}")
    return method  # type: ignore[return-value]


def gram_matrix(xf: torch.Tensor) -> torch.Tensor:
    """``X X^T`` per problem: ``(B, N, N)`` from ``(B, N, D)`` (padded rows are zero, so are theirs)."""
    return torch.bmm(xf, xf.transpose(1, 2))


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float64 numbers drawn on the generator's device, moved to ``device``."""
    return torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float64).to(device)


def greedy_kmeans_plusplus(
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    k: int,
    gens: Sequence[torch.Generator],
    lens: Sequence[int] | None = None,
    method: str = DEFAULT_SEEDING,
    gram: torch.Tensor | None = None,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Row indices ``(B, K)`` of greedy k-means++ seeds for the padded problems ``xf`` ``(B, N, D)``.

    ``x_sq`` holds the squared row norms ``(B, N)``; problem ``b`` owns rows ``[0, lens[b])`` (all
    rows when ``lens`` is None), padded rows are never drawn and never count in the potential.
    Problem ``b`` draws its numbers from ``gens[b]``: first the index of the first seed, then all
    ``(K - 1) * L`` uniforms of the later steps in one call, so a problem makes the same choices
    alone or in a batch (up to rounding of the batched products). ``gram``: the problems' ``X X^T``
    ``(B, N, N)`` if the caller has it (then the pairwise path is taken), see :func:`gram_matrix`.
    ``n_local_trials``: candidates per step (None: ``2 + floor(ln K)``; 1: classic k-means++).
    """
    b, n, _ = xf.shape
    dev = xf.device
    lens = [n] * b if lens is None else list(lens)
    n_trials = n_trials_for(k, n_local_trials)
    resolved = "pairwise" if gram is not None else check_seeding(method)
    if resolved == "blocked":  # rejection is per problem: one at a time
        return blocked_seeds(xf, x_sq, lens, k, gens, n_local_trials)[0]
    first = torch.cat([torch.randint(m, (1,), generator=g, device=g.device).to(dev) for m, g in zip(lens, gens)])
    if k > 1:
        u = torch.stack([_rand((k - 1, n_trials), g, dev) for g in gens], dim=1)  # (K-1, B, L)
        weights = (1.0 - u)  # in (0, 1]: a zero draw cannot select a zero-weight (chosen) point
    padded = any(m < n for m in lens)
    mask = (torch.arange(n, device=dev).unsqueeze(0) < torch.tensor(lens, device=dev).unsqueeze(1)) if padded else None
    last = torch.tensor(lens, device=dev).sub_(1).unsqueeze(1)  # (B, 1)

    if gram is None and resolved == "pairwise":
        gram = gram_matrix(xf)
    rows = _distance_rows(xf, x_sq, gram)

    chosen = torch.empty((b, k), dtype=torch.long, device=dev)
    chosen[:, 0] = first
    ar = torch.arange(b, device=dev)
    closest = rows(first.unsqueeze(1))[:, 0]  # (B, N)
    closest[ar, first] = 0  # exactly: |x|^2 - 2 x.x + |x|^2 may round to a tiny positive weight
    if mask is not None:
        closest.mul_(mask)
        maskf = mask.unsqueeze(1).to(xf.dtype)
    for c in range(1, k):
        cums = torch.cumsum(closest, 1, dtype=torch.float64)  # (B, N)
        cand = torch.searchsorted(cums, weights[c - 1] * cums[:, -1:])
        cand = torch.minimum(cand, last)  # guards the top end against rounding
        dc = rows(cand)  # (B, L, N)
        torch.minimum(dc, closest.unsqueeze(1), out=dc)
        if mask is not None:
            dc.mul_(maskf)
        best = torch.argmin(dc.sum(2, dtype=torch.float64), dim=1)  # (B,)
        chosen[:, c] = cand[ar, best]
        closest = dc[ar, best]
        closest[ar, chosen[:, c]] = 0  # a chosen point can never be drawn again
    return chosen


def blocked_seeds(
    xf: torch.Tensor, x_sq: torch.Tensor, lens: Sequence[int], k: int, gens: Sequence[torch.Generator],
    n_local_trials: int | None = None, grams: SmallPoolGrams | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``'blocked'`` seeds of each padded problem, one problem at a time on its own rows.

    Returns ``(seed rows (B, K), labels (B, N), squared distances (B, N))``: every real row's nearest
    seed and its distance (padded rows: label 0, distance 0), which the Lloyd loop can take as its
    first assignment. ``grams``: the small pools' ``X X^T`` where the caller has them
    (:class:`~.small_pools.SmallPoolGrams`).
    """
    b, n, _ = xf.shape
    n_trials = n_trials_for(k, n_local_trials)
    idx = torch.empty((b, k), dtype=torch.long, device=xf.device)
    labels = torch.zeros((b, n), dtype=torch.long, device=xf.device)
    dist = xf.new_zeros((b, n))
    by_length: dict[int, list[int]] = {}
    for i, (m, g) in enumerate(zip(lens, gens)):
        if small_pool(m, k):  # small pools of one length are seeded together, below
            by_length.setdefault(m, []).append(i)
            continue
        x, sq = xf[i, :m], x_sq[i, :m]
        idx[i], labels[i, :m], dist[i, :m] = blocked_seeds_and_assignment(x, sq, k, g, n_trials)
    for m, ids in by_length.items():
        x, sq = rows_of(xf, ids, m), rows_of(x_sq, ids, m)
        if grams is not None and all(i in grams for i in ids):
            gram = grams.stack(ids, m)
        else:
            gram = gram_matrix(x)
        i_b, l_b, d_b = _small_pool_seeds(x, sq, gram, k, [gens[i] for i in ids], n_local_trials)
        if len(by_length) == 1 and len(ids) == b and m == n:  # every problem, at full length
            return i_b, l_b, d_b
        sel = torch.tensor(ids, device=xf.device)
        idx[sel], labels[sel, :m], dist[sel, :m] = i_b, l_b, d_b
    return idx, labels, dist



def _small_pool_seeds(
    x: torch.Tensor, x_sq: torch.Tensor, gram: torch.Tensor, k: int, gens: Sequence[torch.Generator],
    n_local_trials: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``'blocked'`` on small pools of one length ``(B, m, D)``: the pairwise sampling from their Gram
    matrices, each with its own generator, and the rows' nearest seed and distance read from the same
    matrices (ties go to the earlier seed)."""
    idx = greedy_kmeans_plusplus(x, x_sq, k, list(gens), gram=gram, n_local_trials=n_local_trials)  # (B, k)
    rows = torch.gather(gram, 1, idx.unsqueeze(2).expand(-1, -1, gram.shape[2]))  # (B, k, m)
    d = torch.add(x_sq.unsqueeze(1) + torch.gather(x_sq, 1, idx).unsqueeze(2), rows, alpha=-2.0)
    dist, labels = d.clamp_(min=0).min(dim=1)
    ar = torch.arange(k, device=x.device).expand_as(idx)
    labels.scatter_(1, idx, ar)  # each seed is its own nearest (exactly 0 away)
    dist.scatter_(1, idx, torch.zeros_like(idx, dtype=dist.dtype))
    return idx, labels, dist


def _distance_rows(xf: torch.Tensor, x_sq: torch.Tensor, gram: torch.Tensor | None):
    """``rows(idx)``: squared distances ``(B, L, N)`` from the candidate rows ``idx`` ``(B, L)`` to every row.

    With ``gram`` (``X X^T``, the pairwise path) they are gathered from it; otherwise one skinny
    product per call (the direct path).
    """
    b, n, _ = xf.shape
    x_sq_row = x_sq.unsqueeze(1)
    if gram is not None:
        flat_g = gram.reshape(b * n, n)
        offsets = (torch.arange(b, device=xf.device) * n).unsqueeze(1)

        def rows(idx: torch.Tensor) -> torch.Tensor:
            picked = flat_g.index_select(0, (idx + offsets).reshape(-1)).view(b, -1, n)
            out = torch.add(x_sq_row + torch.gather(x_sq, 1, idx).unsqueeze(2), picked, alpha=-2.0)
            return out.clamp_(min=0)

        return rows
    x_t = xf.transpose(1, 2)

    def rows(idx: torch.Tensor) -> torch.Tensor:
        cand = torch.gather(xf, 1, idx.unsqueeze(2).expand(-1, -1, xf.shape[2]))  # (B, L, D)
        out = torch.baddbmm(x_sq_row, cand, x_t, alpha=-2.0)
        return out.add_(torch.gather(x_sq, 1, idx).unsqueeze(2)).clamp_(min=0)

    return rows


def blocked_seeds_and_assignment(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator, n_trials: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy k-means++ seeds of one problem by blocked proposals and rejection (see module doc).

    Returns ``(seed rows (K,), labels (N,), squared distances (N,))``: each point's nearest seed
    and its distance, which the seeding has computed anyway (the chosen candidates' rows), so
    the first Lloyd iteration can skip its assignment product. Ties go to the earlier seed, as in
    the assignment step.
    """
    n = x.shape[0]
    dev = x.device
    first = torch.randint(n, (1,), generator=gen, device=gen.device).to(dev)
    chosen = torch.empty(k, dtype=torch.long, device=dev)
    chosen[0] = first[0]
    x_t = x.t()
    x_sq_row = x_sq.unsqueeze(0)

    def rows(idx: torch.Tensor) -> torch.Tensor:  # squared distances of the rows idx to every point
        out = torch.addmm(x_sq_row, x.index_select(0, idx), x_t, alpha=-2.0)
        return out.add_(x_sq.index_select(0, idx).unsqueeze(1)).clamp_(min=0)

    closest = rows(first)[0]
    closest[first[0]] = 0  # exactly: |x|^2 - 2 x.x + |x|^2 may round to a tiny positive weight
    labels = torch.zeros(n, dtype=torch.long, device=dev)
    last = n - 1
    buf_idx = torch.empty(0, dtype=torch.long, device=dev)
    buf_w = buf_rows = closest.new_empty(0)
    for c in range(1, k):
        taken_idx, taken_rows = [], []
        need = n_trials
        while need:
            if buf_idx.numel() == 0:  # a new block, drawn with the weights of this moment
                cums = torch.cumsum(closest, 0, dtype=torch.float64)
                size = min(BLOCK, max(need, (k - c) * n_trials))
                u = 1.0 - _rand((size,), gen, dev)  # (0, 1]: zero-weight points are never proposed
                buf_idx = torch.searchsorted(cums, u * cums[-1]).clamp_(max=last)
                buf_w = closest.index_select(0, buf_idx)
                buf_rows = rows(buf_idx)
            u = _rand((buf_idx.numel(),), gen, dev)
            w_now = closest.index_select(0, buf_idx)
            # accept with probability w_now / w_ref; a zero w_ref only happens when every weight is 0
            ok = ((u * buf_w) < w_now) | (buf_w == 0)
            pos = ok.nonzero().flatten()
            take = pos[:need]
            cut = int(take[-1]) + 1 if take.numel() == need else buf_idx.numel()
            taken_idx.append(buf_idx.index_select(0, take))
            taken_rows.append(buf_rows.index_select(0, take))
            need -= take.numel()
            buf_idx, buf_w, buf_rows = buf_idx[cut:], buf_w[cut:], buf_rows[cut:]
        cand = torch.cat(taken_idx)
        raw = torch.cat(taken_rows)
        dc = torch.minimum(raw, closest.unsqueeze(0))
        best = torch.argmin(dc.sum(1, dtype=torch.float64))
        chosen[c] = cand[best]
        labels.masked_fill_(raw[best] < closest, c)  # strictly nearer: ties keep the earlier seed
        closest = dc[best]
        closest[chosen[c]] = 0  # a chosen point can never be drawn again
        labels[chosen[c]] = c
    return chosen, labels, closest


def sampled_size(k: int) -> int:
    """Rows used by ``'k-means++-sampled'`` seeding: ``max(20 K, 1000)``."""
    return max(20 * k, 1000)


def kmeans_plusplus(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator, method: str = DEFAULT_SEEDING,
    n_local_trials: int | None = None, sampled: bool = False,
) -> torch.Tensor:
    """k-means++ centres ``(K, D)`` of one problem ``x`` ``(N, D)``; ``sampled``: on :func:`sampled_size` random rows."""
    n = x.shape[0]
    if sampled and sampled_size(k) < n:
        idx = torch.randperm(n, generator=gen, device=gen.device)[: sampled_size(k)].to(x.device)
        x, x_sq = x.index_select(0, idx), x_sq.index_select(0, idx)
    idx = greedy_kmeans_plusplus(x.unsqueeze(0), x_sq.unsqueeze(0), k, [gen], method=method,
                                 n_local_trials=n_local_trials)[0]
    return x.index_select(0, idx)


def initial_centres(
    xf: torch.Tensor, x_sq: torch.Tensor, lens: Sequence[int], k: int, gens: Sequence[torch.Generator], init: str,
    method: str = DEFAULT_SEEDING, n_local_trials: int | None = None,
) -> torch.Tensor:
    """Starting centroids ``(B, K, D)`` of the padded problems for a string ``init``.

    ``'random'``: K distinct rows; ``'k-means++'``: all problems' seeding at once;
    ``'k-means++-sampled'``: k-means++ on a random subsample of each problem. Each problem draws
    from its own generator, so its centres are the same alone and in a batch.
    """
    if init == "random":
        rows = []
        for i, (n, g) in enumerate(zip(lens, gens)):
            idx = torch.randperm(n, generator=g, device=g.device)[:k].to(xf.device)
            rows.append(xf[i].index_select(0, idx))
        return torch.stack(rows)
    if init == "k-means++":
        idx = greedy_kmeans_plusplus(xf, x_sq, k, gens, lens, method=method, n_local_trials=n_local_trials)
        return torch.gather(xf, 1, idx.unsqueeze(2).expand(-1, -1, xf.shape[2]))
    if init == "k-means++-sampled":
        return torch.stack([kmeans_plusplus(xf[i, :n], x_sq[i, :n], k, g, method, n_local_trials, sampled=True)
                            for i, (n, g) in enumerate(zip(lens, gens))])
    raise ValueError(f"unknown init {init!r}; allowed: 'k-means++', 'k-means++-sampled', 'random' or a tensor")
