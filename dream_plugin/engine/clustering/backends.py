"""Optional k-means backends behind one interface.

``run_kmeans(..., backend=name)`` returns the same :class:`KMeansResult` for
every backend so callers can swap engines without code changes:

* ``"torch"`` - our engine (:func:`dream_plugin.engine.clustering.kmeans`), default.
* ``"sklearn"`` - ``sklearn.cluster.KMeans`` (core dependency), ``n_init=1``.
* ``"fast_pytorch_kmeans"`` - extra ``dream-plugin[fast-kmeans]``.
* ``"faiss"`` - extra ``dream-plugin[faiss]``.

Optional libraries are imported lazily.  Every backend is seeded from the
caller's ``torch.Generator`` (or ``seed``) and leaves the global torch / NumPy
/ Python random states untouched.  Labels and inertia of the non-torch
backends are recomputed by us (float64 sum) from the returned centroids, so
they are comparable across backends and always match the centroids.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch

from dream_plugin.engine.clustering.distances import compute_dtype, nearest_centroid, row_sq_norms
from dream_plugin.engine.clustering.kmeans import kmeans
from dream_plugin.engine.clustering.seeding import initial_centres
from dream_plugin.engine.clustering.validation import KMeansResult, make_generator, validate_common, validate_init, validate_x

__all__ = ["BACKEND_NAMES", "available_backends", "run_kmeans"]

#: Names accepted by :func:`run_kmeans` and ``KMeans(backend=...)``.
BACKEND_NAMES = ("torch", "sklearn", "fast_pytorch_kmeans", "faiss")

_MODULES = {
    "torch": "torch",
    "sklearn": "sklearn.cluster",
    "fast_pytorch_kmeans": "fast_pytorch_kmeans",
    "faiss": "faiss",
}
_INSTALL_HINT = {
    "torch": "pip install torch",
    "sklearn": "pip install scikit-learn (a core dependency of dream-plugin)",
    "fast_pytorch_kmeans": "pip install 'dream-plugin[fast-kmeans]'",
    "faiss": "pip install 'dream-plugin[faiss]'",
}


def _check_backend(backend: object) -> str:
    if backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(map(repr, BACKEND_NAMES))}")
    return backend  # type: ignore[return-value]


def _import_backend(backend: str) -> Any:
    """Import the library behind ``backend`` or raise an ImportError saying how to get it."""
    try:
        return importlib.import_module(_MODULES[backend])
    except ImportError as exc:  # includes sys.modules[name] = None and missing transitive deps
        raise ImportError(
            f"k-means backend {backend!r} is not available ({exc}); install it with: {_INSTALL_HINT[backend]}"
        ) from exc


def available_backends() -> dict[str, bool]:
    """Map each backend name to whether its library can be imported here."""
    out = {}
    for name in BACKEND_NAMES:
        try:
            _import_backend(name)
            out[name] = True
        except ImportError:
            out[name] = False
    return out


def _seed_from(gen: torch.Generator) -> int:
    """Deterministic 31-bit seed for libraries that want an int, drawn from ``gen``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device))


@contextlib.contextmanager
def _preserve_global_rng(device: torch.device) -> Iterator[None]:
    """Save and restore torch's global RNG (CPU, and x's CUDA device if any)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        yield


def _init_centers(
    xf: torch.Tensor, init: str | torch.Tensor, k: int, gen: torch.Generator
) -> torch.Tensor:
    """Initial centroids in compute dtype using our seeded initialisers."""
    if isinstance(init, torch.Tensor):
        return init.to(xf.dtype)
    return initial_centres(xf.unsqueeze(0), row_sq_norms(xf).unsqueeze(0), [xf.shape[0]], k, [gen], init)[0]


def _finish(
    x: torch.Tensor,
    centers: torch.Tensor,
    n_iter: int,
    converged: bool,
    backend: str,
    chunk_size: int,
) -> KMeansResult:
    centers = centers.to(device=x.device, dtype=compute_dtype(x.dtype))
    labels, dist = nearest_centroid(x, centers, chunk_size=chunk_size)
    return KMeansResult(
        centroids=centers.to(x.dtype),
        labels=labels,
        inertia=float(dist.sum(dtype=torch.float64)),
        n_iter=int(n_iter),
        converged=bool(converged),
        backend=backend,
    )


def _run_sklearn(x, k, max_iter, tol, init, gen, chunk_size) -> KMeansResult:
    cluster = _import_backend("sklearn")
    np_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xn = x.detach().to(device="cpu", dtype=np_dtype).numpy()
    init_arg: Any = init
    if init == "k-means++-sampled":  # not a scikit-learn option: seed it with ours
        init = _init_centers(x.detach().to(compute_dtype(x.dtype)), init, k, gen)
    if isinstance(init, torch.Tensor):
        init_arg = init.detach().to(device="cpu", dtype=np_dtype).numpy()
    est = cluster.KMeans(
        n_clusters=k,
        init=init_arg,
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=_seed_from(gen),
        algorithm="lloyd",
    )
    est.fit(xn)
    centers = torch.from_numpy(est.cluster_centers_)
    n_iter = int(est.n_iter_)
    return _finish(x, centers, n_iter, n_iter < max_iter, "sklearn", chunk_size)


def _run_fast_pytorch_kmeans(x, k, max_iter, tol, init, gen, chunk_size) -> KMeansResult:
    fpk = _import_backend("fast_pytorch_kmeans")
    xf = x.detach().to(compute_dtype(x.dtype))
    # Its own initialisers use torch's global RNG (and 'random' samples with
    # replacement), so we seed it with our initialisation instead.
    init_c = _init_centers(xf, init, k, gen)
    var, _ = torch.var_mean(xf, dim=0, correction=0)
    tol_abs = tol * float(var.mean())  # it compares the raw squared shift, make it scale-aware

    class _Counting(fpk.KMeans):  # count Lloyd iterations (not exposed by the library)
        n_calls = 0

        def max_sim(self, a, b):  # noqa: D401 - library override
            self.n_calls += 1
            return super().max_sim(a, b)

    est = _Counting(n_clusters=k, max_iter=max_iter, tol=tol_abs, mode="euclidean", verbose=0)
    with _preserve_global_rng(x.device):
        est.fit(xf, centroids=init_c.clone())
    n_iter = est.n_calls
    return _finish(x, est.centroids, n_iter, n_iter < max_iter, "fast_pytorch_kmeans", chunk_size)


def _run_faiss(x, k, max_iter, tol, init, gen, chunk_size) -> KMeansResult:
    faiss = _import_backend("faiss")
    n, d = x.shape
    xf32 = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    init_c = None
    seed = _seed_from(gen)
    if isinstance(init, torch.Tensor) or init in ("k-means++", "k-means++-sampled"):
        # faiss (< 1.9) has no k-means++; seed it with ours for comparable quality
        init_c = _init_centers(xf32, init, k, gen)
        init_c = init_c.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    km = faiss.Kmeans(
        d,
        k,
        niter=max_iter,
        seed=seed,
        spherical=False,
        verbose=False,
        min_points_per_centroid=1,  # silence the "too few points" warning
        max_points_per_centroid=max(n, 256),  # never subsample the training set
    )
    km.train(xf32.numpy(), init_centroids=init_c)
    centers = torch.from_numpy(km.centroids.copy())
    # faiss has no tolerance parameter; recent versions stop by themselves once
    # the objective no longer changes, so count the iterations it reports.
    n_iter = len(km.iteration_stats) if km.iteration_stats else max_iter
    return _finish(x, centers, n_iter, n_iter < max_iter, "faiss", chunk_size)


_RUNNERS = {
    "sklearn": _run_sklearn,
    "fast_pytorch_kmeans": _run_fast_pytorch_kmeans,
    "faiss": _run_faiss,
}


def run_kmeans(
    x: torch.Tensor,
    n_clusters: int,
    *,
    backend: str = "torch",
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str | torch.Tensor = "k-means++",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    chunk_size: int = 4096,
    precision: str = "fp32",
    seeding: str | None = None,
    n_local_trials: int | None = None,
) -> KMeansResult:
    """Run k-means on ``x`` (N, D) with the chosen ``backend``; same result type for all.

    Randomness comes from ``generator`` or, if given instead, an int ``seed``
    (a fresh generator seeded with it); neither means nondeterministic.  The
    returned centroids are on x's device in x's dtype.  ``tol`` is
    scale-aware (relative to the mean feature variance) for torch, sklearn and
    fast_pytorch_kmeans; faiss has no tolerance (it runs up to ``max_iter``
    iterations, newer versions stop early once the objective is stable).
    sklearn and faiss work on a CPU copy of x (float32; float64 for sklearn
    on float64 input), fast_pytorch_kmeans on x's device.  fast_pytorch_kmeans
    always starts from our seeded initialisation (its own uses the global
    RNG); faiss gets our k-means++ centroids for ``'k-means++'`` (older faiss
    has none) and uses its own seeded sampling for ``'random'``. ``seeding`` (torch only;
    None is the engine's default, ``'blocked'``), ``precision`` and ``n_local_trials`` are
    options of the torch engine.
    """
    backend = _check_backend(backend)
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        generator = torch.Generator().manual_seed(seed)
    if backend == "torch":
        return kmeans(
            x, n_clusters, max_iter=max_iter, tol=tol, init=init, generator=generator, chunk_size=chunk_size,
            precision=precision, n_local_trials=n_local_trials, **({} if seeding is None else {"seeding": seeding}),
        )
    if precision != "fp32":
        raise ValueError(f"precision={precision!r} is only available with backend 'torch' (got {backend!r})")
    if seeding is not None:
        raise ValueError(f"seeding={seeding!r} is only available with backend 'torch' (got {backend!r})")
    if n_local_trials is not None:
        raise ValueError(f"n_local_trials={n_local_trials!r} is only available with backend 'torch' (got {backend!r})")
    _import_backend(backend)  # fail early with the install hint, before any work
    x = validate_x(x)
    k, max_iter, tol, chunk_size = validate_common(x, n_clusters, max_iter, tol, chunk_size)
    init = validate_init(init, x, k)
    gen = make_generator(generator)
    return _RUNNERS[backend](x, k, max_iter, tol, init, gen, chunk_size)
