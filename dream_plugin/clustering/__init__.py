"""Clustering for DREAM: k-means on class embeddings and centroid -> item matching.

Public API:

* :func:`kmeans_batched` / :class:`BatchedKMeansResult` / :func:`pad_problems` - the engine:
  many independent problems (every class of a re-selection) in one padded, batched run, with
  one Lloyd loop (:mod:`.lloyd`) and an explicitly chosen seeding (:mod:`.seeding`).
* :func:`kmeans` / :class:`KMeans` / :class:`KMeansResult` - one problem (the engine with a
  batch of one; CPU or CUDA, chunked, seeded by an explicit ``torch.Generator``).
* :func:`run_kmeans` / :func:`available_backends` - the same call through
  optional engines (``"torch"``, ``"sklearn"``, ``"fast_pytorch_kmeans"``, ``"faiss"``).
* :func:`nearest_unique` / :func:`nearest_per_cluster` - turn centroids into
  distinct dataset items (DREAM / DREAM+ picks).
* :func:`squared_distances` / :func:`nearest_centroid` - chunked distance helpers.
"""

from .backends import BACKEND_NAMES, available_backends, run_kmeans
from .batched import BatchedKMeansResult, kmeans_batched, pad_problems
from .distances import nearest_centroid, squared_distances
from .estimator import KMeans
from .kmeans import INIT_METHODS, PRECISIONS, KMeansResult, kmeans
from .seeding import DEFAULT_SEEDING, SEEDING_METHODS
from .picking import nearest_per_cluster, nearest_unique

__all__ = [
    "BACKEND_NAMES",
    "BatchedKMeansResult",
    "DEFAULT_SEEDING",
    "SEEDING_METHODS",
    "INIT_METHODS",
    "PRECISIONS",
    "KMeans",
    "KMeansResult",
    "available_backends",
    "kmeans",
    "kmeans_batched",
    "pad_problems",
    "nearest_centroid",
    "nearest_per_cluster",
    "nearest_unique",
    "run_kmeans",
    "squared_distances",
]
