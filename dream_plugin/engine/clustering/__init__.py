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

from dream_plugin.engine.clustering.backends import BACKEND_NAMES, available_backends, run_kmeans
from dream_plugin.engine.clustering.batched import BatchedKMeansResult, kmeans_batched, pad_problems
from dream_plugin.engine.clustering.distances import nearest_centroid, squared_distances
from dream_plugin.engine.clustering.estimator import KMeans
from dream_plugin.engine.clustering.kmeans import INIT_METHODS, PRECISIONS, KMeansResult, kmeans
from dream_plugin.engine.clustering.seeding import DEFAULT_SEEDING, SEEDING_METHODS
from dream_plugin.engine.clustering.picking import nearest_per_cluster, nearest_unique

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
