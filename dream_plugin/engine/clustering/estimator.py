"""A scikit-learn style estimator over the engine and the optional backends."""

from __future__ import annotations

import torch

from dream_plugin.engine.clustering.backends import BACKEND_NAMES, run_kmeans
from dream_plugin.engine.clustering.distances import nearest_centroid
from dream_plugin.common.inputs import as_int
from dream_plugin.engine.clustering.validation import validate_x

__all__ = ["KMeans"]


class KMeans:
    """scikit-learn style estimator around :func:`kmeans` / the optional backends.

    ``random_state`` may be an int (a fresh generator seeded with it on every
    ``fit``, so refits are reproducible), a ``torch.Generator`` (used and
    advanced in place) or ``None`` (nondeterministic).  ``backend`` is one of
    :func:`dream_plugin.engine.clustering.available_backends`' names and is checked here.
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
        if backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(map(repr, BACKEND_NAMES))}")
        if random_state is not None and not isinstance(random_state, torch.Generator):
            random_state = as_int(random_state, "random_state")
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
        x = validate_x(x)
        return nearest_centroid(x, self.cluster_centers_, chunk_size=self.chunk_size)[0]

    def fit_predict(self, x: torch.Tensor) -> torch.Tensor:
        """Fit on ``x`` and return its labels (same as ``fit(x).labels_``)."""
        return self.fit(x).labels_
