"""Lloyd on the Gram matrix gives the direct loop's answers (small pools' fast path)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import gen
from dream_plugin.clustering import kmeans, kmeans_batched, nearest_centroid, pad_problems
from dream_plugin.clustering.batched import _direct_fit, _gram_fit, _row_mask
from dream_plugin.clustering.seeding import choose_method, gram_matrix, greedy_kmeans_plusplus


def _problem(xs, k, seeds=None, seed=0):
    xb, lens = pad_problems(xs)
    lens = lens.tolist()
    mask = _row_mask(lens, xb.shape[1], xb.device)
    x_sq = torch.linalg.vector_norm(xb, dim=2).square()
    if seeds is None:
        seeds = greedy_kmeans_plusplus(xb, x_sq, k, [gen(seed + i) for i in range(len(xs))], lens)
    centers = torch.gather(xb, 1, seeds.unsqueeze(2).expand(-1, -1, xb.shape[2]))
    return xb, x_sq, mask, lens, seeds, centers


def _both(xs, k, seeds=None, max_iter=100, tol=1e-4):
    xb, x_sq, mask, lens, seeds, centers = _problem(xs, k, seeds)
    tol_abs = [tol] * len(xs)
    g = _gram_fit(xb, x_sq, gram_matrix(xb), seeds, mask, k, max_iter, tol_abs)
    d = _direct_fit(xb, x_sq, mask, lens, centers, k, max_iter, tol_abs, 4096, "fp32")
    return xb, lens, g, d


@pytest.mark.parametrize(("sizes", "dim", "k"), [((120,), 40, 12), ((90, 60, 75), 30, 8), ((50,), 200, 25)])
def test_gram_and_direct_lloyd_reach_the_same_clustering(sizes, dim, k):
    xs = [torch.randn(n, dim, generator=gen(n + dim)) + 2 * torch.randn(1, dim, generator=gen(n)) for n in sizes]
    xb, lens, g, d = _both(xs, k)
    assert g is not None
    (cg, ig, vg, ag), (cd, id_, vd, ad) = g, d
    assert ig == id_ and vg == vd  # same iteration counts and convergence flags
    for b, n in enumerate(lens):
        lab_g, dist_g = nearest_centroid(xb[b, :n], cg[b])
        lab_d, dist_d = nearest_centroid(xb[b, :n], cd[b])
        assert torch.equal(lab_g, lab_d)
        assert float(dist_g.sum()) == pytest.approx(float(dist_d.sum()), rel=1e-5)
        assert torch.allclose(cg[b], cd[b], atol=1e-4)
        # a loop that stopped on unchanged labels hands back the assignment to its own centroids
        for assigned in (ag, ad):
            if assigned is not None:
                assert torch.equal(assigned[0][b, :n], lab_g)
                assert torch.allclose(assigned[1][b, :n], dist_g, rtol=1e-4, atol=1e-3)


def test_empty_clusters_are_reseeded_on_the_farthest_points_as_in_the_direct_loop():
    x = torch.randn(40, 6, generator=gen(3))
    seeds = torch.tensor([[0, 0, 5, 9]])  # seed 1 duplicates seed 0: it starts empty
    xb, lens, g, d = _both([x], 4, seeds=seeds, max_iter=1)
    assert g is not None
    assert torch.allclose(g[0], d[0], atol=1e-5)  # the reseeded cluster holds the same farthest point


def test_a_donor_left_empty_falls_back_to_the_direct_loop():
    # two points, three seeds (one repeated): every cluster is a singleton or empty, so the point
    # that must move into the empty cluster would leave its own cluster empty
    x = torch.tensor([[0.0], [10.0]])
    xb, x_sq, mask, lens, seeds, centers = _problem([x], 3, seeds=torch.tensor([[0, 1, 0]]))
    assert _gram_fit(xb, x_sq, gram_matrix(xb), seeds, mask, 3, 5, [0.0]) is None
    direct, _, _, _ = _direct_fit(xb, x_sq, mask, lens, centers, 3, 5, [0.0], 4096, "fp32")
    assert sorted(direct[0].flatten().tolist()) in ([0.0, 0.0, 10.0], [0.0, 10.0, 10.0])
    res = kmeans(x, 2, generator=gen(0))  # the public call answers on such tiny pools too
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


def test_kmeans_on_a_small_pool_matches_scikit_learn_from_the_same_seeds():
    from sklearn.cluster import KMeans as SKKMeans

    x = torch.randn(300, 50, generator=gen(11)) + torch.randint(0, 3, (300, 1), generator=gen(12)) * 4.0
    k = 30
    assert choose_method(300, k) == "pairwise"  # the Gram path runs
    ours = kmeans(x, k, generator=gen(5), tol=0.0)
    _, _, _, _, seeds, centers = _problem([x], k, seed=5)
    sk = SKKMeans(k, init=centers[0].double().numpy(), n_init=1, tol=0.0, algorithm="lloyd").fit(x.double().numpy())
    assert ours.inertia == pytest.approx(sk.inertia_, rel=1e-4)
    assert ours.n_iter == sk.n_iter_


def test_batched_gram_path_matches_single_calls_with_padding():
    xs = [torch.randn(n, 64, generator=gen(n)) for n in (150, 110, 130)]
    xb, lens = pad_problems(xs)
    res = kmeans_batched(xb, 32, lengths=lens, generators=[gen(i) for i in range(3)])
    for i, x in enumerate(xs):
        one = kmeans(x, 32, generator=gen(i))
        assert res.inertia[i] == pytest.approx(one.inertia, rel=1e-5)
        assert res.n_iter[i] == one.n_iter
        assert bool((res.labels[i, lens[i]:] == -1).all())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(2, 40), min_size=1, max_size=3),
    dim=st.integers(1, 24),
    k_frac=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
)
def test_property_gram_lloyd_equals_direct_lloyd(sizes, dim, k_frac, seed):
    # Continuous data from a seeded generator (no engineered ties), K from 1 to the smallest pool,
    # both loops from the same seeds. (The two seeding paths are not compared here: on tiny pools
    # two candidates can lower the potential by exactly the same amount in real arithmetic, and
    # then rounding picks one; both picks are correct.)
    xs = [torch.randn(n, dim, generator=gen(seed + i)) * (1 + i) for i, n in enumerate(sizes)]
    k = max(1, int(k_frac * min(sizes)))
    xb, x_sq, mask, lens, seeds, centers = _problem(xs, k, seed=seed)
    tol_abs = [0.0] * len(xs)
    g = _gram_fit(xb, x_sq, gram_matrix(xb), seeds, mask, k, 50, tol_abs)
    d = _direct_fit(xb, x_sq, mask, lens, centers, k, 50, tol_abs, 4096, "fp32")
    assume(g is not None)  # degenerate re-seeding falls back to the direct loop (tested above)
    for b, n in enumerate(lens):
        inert_g = float(nearest_centroid(xb[b, :n].double(), g[0][b].double())[1].sum())
        inert_d = float(nearest_centroid(xb[b, :n].double(), d[0][b].double())[1].sum())
        assert inert_g == pytest.approx(inert_d, rel=1e-4, abs=1e-4)
        assert g[1][b] == d[1][b]


@pytest.mark.parametrize("seeding", ["pairwise", "direct"])
def test_final_assignment_is_reused_only_when_every_problem_stopped_on_unchanged_labels(seeding):
    # 'pairwise' runs the Gram loop, 'direct' the direct batched loop
    xs = [torch.randn(n, 24, generator=gen(n)) + 3 * torch.randint(0, 4, (n, 1), generator=gen(n + 1)) for n in (80, 65)]
    xb, x_sq, mask, lens, seeds, centers = _problem(xs, 6, seed=2)
    for tol, reused in ((0.0, True), (1e9, False)):  # tol=1e9 stops on the shift after one iteration
        tol_abs = [tol] * 2
        if seeding == "pairwise":
            out = _gram_fit(xb, x_sq, gram_matrix(xb), seeds, mask, 6, 100, tol_abs)
        else:
            out = _direct_fit(xb, x_sq, mask, lens, centers, 6, 100, tol_abs, 4096, "fp32")
        assert (out[3] is not None) == reused, tol
        # the public result's labels and inertia belong to its centroids either way
        res = kmeans_batched(xb, 6, lengths=lens, generators=[gen(2), gen(3)], tol=tol, seeding=seeding)
        for b, n in enumerate(lens):
            lab, dist = nearest_centroid(xb[b, :n], res.centroids[b])
            assert torch.equal(res.labels[b, :n], lab)
            assert res.inertia[b] == pytest.approx(float(dist.sum(dtype=torch.float64)), rel=1e-4)
            assert bool((res.labels[b, n:] == -1).all())
