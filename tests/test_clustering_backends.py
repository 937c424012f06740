"""Tests for dream_plugin.engine.clustering.backends (optional k-means engines)."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from conftest import gen
from dream_plugin.engine.clustering import BACKEND_NAMES, KMeans, available_backends, kmeans, run_kmeans

AVAILABLE = available_backends()
BACKENDS = [name for name, ok in AVAILABLE.items() if ok]


def test_available_backends_shape():
    assert set(AVAILABLE) == set(BACKEND_NAMES)
    assert AVAILABLE["torch"] and AVAILABLE["sklearn"]  # core dependencies


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_quality_and_contract(blobs, backend):
    x, y = blobs
    ours = kmeans(x, 5, generator=gen(0))
    res = run_kmeans(x, 5, backend=backend, generator=gen(0), max_iter=50)
    assert res.backend == backend
    assert res.centroids.shape == (5, 6) and res.centroids.dtype == x.dtype
    assert res.centroids.device == x.device
    assert res.labels.dtype == torch.int64 and res.labels.shape == (400,)
    assert 1 <= res.n_iter <= 50
    assert res.inertia == pytest.approx(ours.inertia, rel=0.03)
    assert adjusted_rand_score(y, res.labels.numpy()) == pytest.approx(1.0)
    # labels/inertia recomputed from the returned centroids
    d = ((x[:, None, :].double() - res.centroids[None].double()) ** 2).sum(-1)
    assert torch.equal(res.labels, d.argmin(1))
    assert res.inertia == pytest.approx(float(d.min(1).values.sum()), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_deterministic_and_no_global_rng(backend):
    x = torch.randn(150, 4, generator=gen(1))
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    a = run_kmeans(x, 6, backend=backend, generator=gen(5))
    b = run_kmeans(x, 6, backend=backend, seed=5)  # seed == fresh generator seeded with it
    c = run_kmeans(x, 6, backend=backend, init="random", generator=gen(5))
    assert torch.equal(torch_state, torch.get_rng_state())
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:]
    assert py_state == random.getstate()
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.labels, b.labels)
    assert c.centroids.shape == (6, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_warm_start_and_half_input(blobs, backend):
    x, _ = blobs
    ref = kmeans(x, 5, generator=gen(0))
    warm = run_kmeans(x, 5, backend=backend, init=ref.centroids, max_iter=20)
    assert warm.inertia == pytest.approx(ref.inertia, rel=1e-3)
    half = run_kmeans(x.half(), 5, backend=backend, generator=gen(0), max_iter=20)
    assert half.centroids.dtype == torch.float16
    assert half.inertia == pytest.approx(ref.inertia, rel=0.03)


@pytest.mark.parametrize("backend", BACKENDS)
def test_estimator_with_backend(blobs, backend):
    x, _ = blobs
    est = KMeans(5, backend=backend, random_state=0, max_iter=30).fit(x)
    assert est.result_.backend == backend
    assert torch.equal(est.predict(x), est.labels_)


def test_unknown_backend_message(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match=r"unknown backend 'cuml'; allowed: 'torch', 'sklearn', 'fast_pytorch_kmeans', 'faiss'"):
        run_kmeans(x, 3, backend="cuml")


def test_seed_and_generator_are_exclusive(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match="either generator or seed, not both"):
        run_kmeans(x, 3, generator=gen(0), seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        run_kmeans(x, 3, seed="1")


def test_backend_validation_runs_before_work(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match=r"n_clusters must be between 1"):
        run_kmeans(x, 0, backend="sklearn")
    with pytest.raises(ValueError, match=r"unknown init 'kmeans'"):
        run_kmeans(x, 2, backend="sklearn", init="kmeans")


@pytest.mark.parametrize(
    ("backend", "module", "hint"),
    [
        ("faiss", "faiss", r"pip install 'dream-plugin\[faiss\]'"),
        ("fast_pytorch_kmeans", "fast_pytorch_kmeans", r"pip install 'dream-plugin\[fast-kmeans\]'"),
        ("sklearn", "sklearn.cluster", r"scikit-learn"),
    ],
)
def test_missing_backend_message(monkeypatch, blobs, backend, module, hint):
    x, _ = blobs
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"k-means backend '{backend}' is not available .*{hint}"):
        run_kmeans(x, 3, backend=backend, seed=0)
    assert available_backends()[backend] is False
