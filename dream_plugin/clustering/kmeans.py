"""Pure-torch k-means (k-means++ seeding + Lloyd iterations).

This is the default engine behind DREAM's representative matching.  It runs on
whatever device ``x`` lives on (CPU or CUDA), keeps memory bounded by chunking
the assignment step, and never touches torch's, NumPy's or Python's global
random state: all randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .centring import centre_far_problems
from .distances import _check_chunk_size, _nearest, _row_sq_norms, compute_dtype
from .grouping import sum_by_label
from .seeding import blocked_seeds_and_assignment, check_n_local_trials, choose_method, greedy_kmeans_plusplus, n_trials_for

__all__ = ["KMeansResult", "kmeans", "KMeans", "INIT_METHODS", "PRECISIONS", "matmul_precision"]

#: String initialisations accepted by :func:`kmeans` (a ``(K, D)`` tensor is also allowed).
#: ``'k-means++-sampled'`` runs the greedy k-means++ on a random subsample of
#: ``max(20 K, 1000)`` rows (cheaper seeding on large pools; see docs/benchmarks.md, "Selection speed").
INIT_METHODS = ("k-means++", "k-means++-sampled", "random")

#: Arithmetic of the distance matrix products: ``'fp32'`` (default, exact float32),
#: ``'tf32'`` (CUDA TensorFloat-32 matmuls) or ``'bf16'`` (CUDA bfloat16 matmuls on centred
#: data). Both reduced precisions are GPU options: on CPU they run as ``'fp32'``. Labels and
#: inertia of the result always come from a final float32 assignment.
PRECISIONS = ("fp32", "tf32", "bf16")


def _validate_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Allow TF32 CUDA matmuls inside the block when ``precision == 'tf32'``; restored after.

    A no-op for ``'fp32'`` / ``'bf16'`` and on CPU. The previous setting comes back even on error.
    """
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):  # torch >= 2.9 API
        old = m.fp32_precision
        try:
            m.fp32_precision = "tf32"
        except Exception:  # noqa: BLE001 - mixing APIs can raise: then run in fp32
            yield
            return
        try:
            yield
        finally:
            m.fp32_precision = old
    else:  # pragma: no cover - older torch
        old_flag = m.allow_tf32
        m.allow_tf32 = True
        try:
            yield
        finally:
            m.allow_tf32 = old_flag


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of one k-means run.

    ``centroids`` is ``(K, D)`` on x's device in x's dtype; ``labels`` is the
    ``(N,)`` int64 index of each point's nearest centroid and ``inertia`` the
    sum of squared distances of points to those centroids (both computed with
    the final centroids).  ``converged`` is True when the stopping rule (labels
    unchanged, or centroid shift <= tolerance) fired within ``max_iter``.
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float
    n_iter: int
    converged: bool
    backend: str = "torch"


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)  # accepts numpy integers too
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def _validate_x(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype {x.dtype}"
        )
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D with shape (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must contain at least one row, got shape {tuple(x.shape)}")
    # cheap screen first: a NaN/inf anywhere makes its row sum non-finite
    if bool(torch.isfinite(x.sum(dim=1)).all()):
        return x
    finite_rows = torch.isfinite(x).all(dim=1)  # exact check (row sums may merely overflow)
    if not bool(finite_rows.all()):
        bad = (~finite_rows).nonzero().flatten()
        shown = ", ".join(str(i) for i in bad[:5].tolist())
        more = f", ...]; {bad.numel()} rows in total" if bad.numel() > 5 else "]"
        raise ValueError(f"x contains NaN or inf values (rows [{shown}{more})")
    return x


def _validate_common(
    x: torch.Tensor, n_clusters: object, max_iter: object, tol: object, chunk_size: object
) -> tuple[int, int, float, int]:
    k = _as_int(n_clusters, "n_clusters")
    n = x.shape[0]
    if k < 1 or k > n:
        raise ValueError(f"n_clusters must be between 1 and the number of rows of x ({n}), got {k}")
    mi = _as_int(max_iter, "max_iter")
    if mi < 1:
        raise ValueError(f"max_iter must be >= 1, got {mi}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float >= 0, got {tol!r}")
    tol_f = float(tol)
    if not tol_f >= 0 or math.isinf(tol_f):  # also rejects NaN
        raise ValueError(f"tol must be a finite float >= 0, got {tol!r}")
    cs = _check_chunk_size(chunk_size)  # type: ignore[arg-type]
    return k, mi, tol_f, cs


def _validate_init(init: object, x: torch.Tensor, k: int) -> str | torch.Tensor:
    if isinstance(init, str):
        if init not in INIT_METHODS:
            raise ValueError(
                f"unknown init {init!r}; allowed: 'k-means++', 'random', 'k-means++-sampled', "
                "or a (K, D) tensor of initial centroids"
            )
        return init
    if not isinstance(init, torch.Tensor):
        raise ValueError(
            f"unknown init of type {type(init).__name__}; allowed: 'k-means++', 'random', "
            "or a (K, D) tensor of initial centroids"
        )
    if not init.is_floating_point():
        raise TypeError(f"init tensor must be floating point, got dtype {init.dtype}")
    if tuple(init.shape) != (k, x.shape[1]):
        raise ValueError(
            f"init tensor must have shape (n_clusters, D) = {(k, x.shape[1])}, got {tuple(init.shape)}"
        )
    if init.device != x.device:
        raise ValueError(f"init tensor must be on x's device {x.device}, got {init.device}")
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init tensor contains NaN or inf values")
    return init


def _make_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        g = torch.Generator()
        g.seed()  # nondeterministic seed for this private generator only
        return g
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


# --------------------------------------------------------------------------- #
# initialisation
# --------------------------------------------------------------------------- #
def _random_init(xf: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randperm(xf.shape[0], generator=gen, device=gen.device)[:k].to(xf.device)
    return xf.index_select(0, idx)


def _kmeans_plusplus(
    xf: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator, method: str = "auto",
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ centres ``(K, D)`` (see :mod:`.seeding`; ``method`` picks how distances are got)."""
    idx = greedy_kmeans_plusplus(
        xf.unsqueeze(0), x_sq.unsqueeze(0), k, [gen], method=method, n_local_trials=n_local_trials
    )[0]
    return xf.index_select(0, idx)


def sampled_size(k: int) -> int:
    """Rows used by ``'k-means++-sampled'`` seeding: ``max(20 K, 1000)``."""
    return max(20 * k, 1000)


def _kmeans_plusplus_sampled(
    xf: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator, method: str = "auto",
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ on a random subsample of :func:`sampled_size` rows (all rows if fewer)."""
    n = xf.shape[0]
    m = sampled_size(k)
    if m >= n:
        return _kmeans_plusplus(xf, x_sq, k, gen, method, n_local_trials)
    idx = torch.randperm(n, generator=gen, device=gen.device)[:m].to(xf.device)
    return _kmeans_plusplus(xf.index_select(0, idx), x_sq.index_select(0, idx), k, gen, method, n_local_trials)


def _seed(
    xf: torch.Tensor, x_sq: torch.Tensor, init: str, k: int, gen: torch.Generator, method: str = "auto",
    n_local_trials: int | None = None,
) -> torch.Tensor:
    if init == "random":
        return _random_init(xf, k, gen)
    if init == "k-means++-sampled":
        return _kmeans_plusplus_sampled(xf, x_sq, k, gen, method, n_local_trials)
    return _kmeans_plusplus(xf, x_sq, k, gen, method, n_local_trials)


# --------------------------------------------------------------------------- #
# Lloyd
# --------------------------------------------------------------------------- #
def _update_centers(
    xf: torch.Tensor,
    labels: torch.Tensor,
    min_dist: torch.Tensor,
    centers: torch.Tensor,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, int]:
    """New centroids = mean of assigned points (vectorised, no loop over clusters).

    Empty clusters are re-seeded on the points farthest from their current
    centroid (distinct points, one per empty cluster), which are removed from
    the cluster they came from, as scikit-learn does.  Returns (centroids,
    number of re-seeded clusters).
    """
    k = centers.shape[0]
    counts = torch.bincount(labels, minlength=k)
    sums = sum_by_label(xf.unsqueeze(0), labels.unsqueeze(0), None, k, rows=chunk_size)[0]
    empty = counts == 0
    n_empty = int(empty.sum())
    if n_empty:
        empty_ids = empty.nonzero().flatten()
        far = torch.topk(min_dist, n_empty, largest=True, sorted=True).indices
        far_x = xf.index_select(0, far)
        donors = labels.index_select(0, far)
        sums.index_add_(0, donors, far_x, alpha=-1)
        counts.index_add_(0, donors, torch.full_like(donors, -1))
        sums[empty_ids] = far_x
        counts[empty_ids] = 1
    denom = counts.clamp(min=1).to(xf.dtype).unsqueeze(1)
    new = sums.div_(denom)
    if n_empty:
        # a donor that lost its only point keeps its previous position
        new = torch.where((counts > 0).unsqueeze(1), new, centers)
    return new, n_empty


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
    seeding: str = "auto",
    n_local_trials: int | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``n_clusters`` groups with Lloyd's algorithm.

    * ``init``: ``'k-means++'`` (greedy, scikit-learn style), ``'k-means++-sampled'`` (the same
      on ``max(20 K, 1000)`` random rows), ``'random'`` (K distinct rows) or a ``(K, D)`` tensor
      on x's device (warm start).
    * ``precision``: ``'fp32'`` (default), or on CUDA ``'tf32'`` / ``'bf16'`` matrix products
      (see :data:`PRECISIONS`); the final labels and inertia are always float32.
    * ``seeding``: how k-means++ gets its distances (:mod:`.seeding`): ``'auto'`` (default; by
      pool size and device), ``'direct'``, ``'pairwise'`` (Gram matrix; Lloyd then runs on it too)
      or ``'blocked'``. Pin one to get the same picks for a seed on CPU and GPU.
    * ``n_local_trials``: k-means++ candidates per step; None (default) is scikit-learn's greedy
      ``2 + floor(ln K)``, 1 is classic k-means++ (less seeding work, usually a few % more inertia).
    * ``generator``: CPU (or x-device) ``torch.Generator`` that seeds the
      initialisation; same state gives the same result, ``None`` uses a fresh
      nondeterministic generator.  Global RNGs are never used.
    * Stops when the labels no longer change, or when the summed squared
      centroid shift is <= ``tol * mean(var(x, dim=0))`` (scale-aware, like
      scikit-learn), or after ``max_iter`` iterations.
    * The data are centred first (distances are translation invariant; the expansion
      ``|x|^2 - 2 x.c + |c|^2`` keeps its precision far from the origin).
    * Distances are computed in ``chunk_size``-row blocks so memory stays
      bounded; arithmetic is float32 at least (half inputs are upcast) and the
      centroids come back in x's dtype.  Labels and inertia always match the
      returned centroids.
    """
    x = _validate_x(x).detach()  # clustering is never differentiated: no autograd graph
    k, max_iter, tol, chunk_size = _validate_common(x, n_clusters, max_iter, tol, chunk_size)
    init = _validate_init(init, x, k)
    gen = _make_generator(generator)
    precision = _validate_precision(precision)
    n_local_trials = check_n_local_trials(n_local_trials)
    method = choose_method(x.shape[0], k, 1, seeding, x.device.type, n_local_trials)  # validates seeding
    small_pool = isinstance(init, str) and init == "k-means++" and precision == "fp32" and method == "pairwise"
    if small_pool or (precision == "bf16" and x.device.type == "cuda"):
        # a batch of one: bf16 products, or the Gram-matrix path for small pools (see .gram_lloyd)
        from .batched import kmeans_batched

        res = kmeans_batched(
            x.unsqueeze(0), k, max_iter=max_iter, tol=tol,
            init=init.unsqueeze(0) if isinstance(init, torch.Tensor) else init,
            generators=[gen], chunk_size=chunk_size, precision=precision, seeding=seeding,
            n_local_trials=n_local_trials,
        )
        return dataclasses.replace(res.result(0), backend="torch")

    xf = x.to(compute_dtype(x.dtype))
    # data far from the origin are centred first (as scikit-learn does): distances do not change,
    # but |x|^2 - 2 x.c + |c|^2 keeps its precision
    xb, x_sq, mu, mean_var = centre_far_problems(xf.unsqueeze(0), [xf.shape[0]], None, xf.data_ptr() != x.data_ptr())
    xf, x_sq, mu = xb[0], x_sq[0], (mu[0] if mu is not None else None)
    tol_abs = tol * float(mean_var[0])

    n = xf.shape[0]
    labels = torch.empty(n, dtype=torch.long, device=xf.device)
    min_dist = torch.empty(n, dtype=xf.dtype, device=xf.device)
    assigned = False  # labels / min_dist already hold the assignment to `centers`
    if isinstance(init, torch.Tensor):
        centers = init.detach().to(xf.dtype)
        centers = centers - mu if mu is not None else centers.clone()
    elif init == "k-means++" and method == "blocked" and precision == "fp32":
        # the blocked seeding has every point's distance to its nearest seed already
        idx, labels, min_dist = blocked_seeds_and_assignment(xf, x_sq, k, gen, n_trials_for(k, n_local_trials))
        centers = xf.index_select(0, idx)
        assigned = True
    else:
        centers = _seed(xf, x_sq, init, k, gen, method, n_local_trials)

    labels_old = torch.empty_like(labels)
    # strict: labels unchanged -> labels/min_dist already match centers
    with matmul_precision(precision, x.device):
        centers, labels, n_iter, converged, strict = _lloyd(
            xf, x_sq, centers, labels, min_dist, labels_old, max_iter, tol_abs, chunk_size, assigned
        )
    if precision == "tf32":
        strict = False  # recompute the final assignment in full float32
    if not strict:
        # final E-step so labels/inertia are those of the returned centroids
        _nearest(xf, x_sq, centers, _row_sq_norms(centers), chunk_size, labels, min_dist)
    inertia = float(min_dist.sum(dtype=torch.float64))
    return KMeansResult(
        centroids=(centers + mu if mu is not None else centers).to(x.dtype),
        labels=labels,
        inertia=inertia,
        n_iter=n_iter,
        converged=converged,
        backend="torch",
    )


def _lloyd(
    xf: torch.Tensor,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor,
    min_dist: torch.Tensor,
    labels_old: torch.Tensor,
    max_iter: int,
    tol_abs: float,
    chunk_size: int,
    assigned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int, bool, bool]:
    """Lloyd iterations in the caller's buffers (``labels`` / ``labels_old`` swap each iteration).

    ``assigned``: ``labels`` / ``min_dist`` already hold the assignment to ``centers`` (from the
    seeding), so the first iteration skips its distance product.

    Returns ``(centers, labels buffer holding the last assignment, n_iter, converged, strict)``.
    """
    converged = strict = False
    n_iter = 0
    for it in range(max_iter):
        if it > 0 or not assigned:
            _nearest(xf, x_sq, centers, _row_sq_norms(centers), chunk_size, labels, min_dist)
        new_centers, n_empty = _update_centers(xf, labels, min_dist, centers, chunk_size)
        n_iter = it + 1
        if it > 0 and n_empty == 0 and torch.equal(labels, labels_old):
            # same labels -> same means: centres are bit-identical, stop
            centers = new_centers
            converged = strict = True
            break
        shift = float(torch.sum((new_centers - centers) ** 2))
        centers = new_centers
        if shift <= tol_abs:
            converged = True
            break
        labels, labels_old = labels_old, labels
    return centers, labels, n_iter, converged, strict


# --------------------------------------------------------------------------- #
# estimator
# --------------------------------------------------------------------------- #
class KMeans:
    """scikit-learn style estimator around :func:`kmeans` / the optional backends.

    ``random_state`` may be an int (a fresh generator seeded with it on every
    ``fit``, so refits are reproducible), a ``torch.Generator`` (used and
    advanced in place) or ``None`` (nondeterministic).  ``backend`` is one of
    :func:`dream_plugin.clustering.available_backends`' names and is checked here.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: str | torch.Tensor = "k-means++",
        random_state: int | torch.Generator | None = None,
        backend: str = "torch",
        chunk_size: int = 4096,
    ) -> None:
        from .backends import BACKEND_NAMES

        if backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(map(repr, BACKEND_NAMES))}")
        if random_state is not None and not isinstance(random_state, torch.Generator):
            random_state = _as_int(random_state, "random_state")
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return (
            f"KMeans(n_clusters={self.n_clusters}, max_iter={self.max_iter}, tol={self.tol}, "
            f"init={self.init if isinstance(self.init, str) else 'tensor'!r}, "
            f"random_state={self.random_state!r}, backend={self.backend!r}, chunk_size={self.chunk_size})"
        )

    def _generator(self) -> torch.Generator | None:
        if isinstance(self.random_state, torch.Generator):
            return self.random_state
        if self.random_state is None:
            return None
        return torch.Generator().manual_seed(int(self.random_state))

    def fit(self, x: torch.Tensor) -> "KMeans":
        """Cluster ``x`` and store ``cluster_centers_``, ``labels_``, ``inertia_``, ``n_iter_``, ``result_``."""
        from .backends import run_kmeans

        res = run_kmeans(
            x,
            self.n_clusters,
            backend=self.backend,
            max_iter=self.max_iter,
            tol=self.tol,
            init=self.init,
            generator=self._generator(),
            chunk_size=self.chunk_size,
        )
        self.result_ = res
        self.cluster_centers_ = res.centroids
        self.labels_ = res.labels
        self.inertia_ = res.inertia
        self.n_iter_ = res.n_iter
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Index (int64) of the nearest fitted centroid for each row of ``x``."""
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("this KMeans instance is not fitted yet; call fit(x) first")
        from .distances import nearest_centroid

        x = _validate_x(x)
        return nearest_centroid(x, self.cluster_centers_, chunk_size=self.chunk_size)[0]

    def fit_predict(self, x: torch.Tensor) -> torch.Tensor:
        """Fit on ``x`` and return its labels (same as ``fit(x).labels_``)."""
        return self.fit(x).labels_
