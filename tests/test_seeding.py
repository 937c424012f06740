"""Greedy k-means++ seeding: the distance paths, padding, and the explicit default."""

from __future__ import annotations

import pytest
import torch

from conftest import gen
from dream_plugin.engine.clustering import kmeans, kmeans_batched, nearest_unique, pad_problems
from dream_plugin.engine.clustering.distances import row_sq_norms
from dream_plugin.engine.clustering.seeding import (
    DEFAULT_SEEDING,
    check_seeding,
    greedy_kmeans_plusplus,
    n_trials_for,
    small_pool,
)


def _seeds(x: torch.Tensor, k: int, method: str, seed: int = 0) -> torch.Tensor:
    return greedy_kmeans_plusplus(x[None], row_sq_norms(x)[None], k, [gen(seed)], method=method)[0]


@pytest.mark.parametrize(("n", "d", "k"), [(60, 5, 1), (60, 5, 7), (200, 32, 20), (150, 300, 40)])
def test_pairwise_and_direct_make_the_same_choices(n, d, k, one_thread):
    x = torch.randn(n, d, generator=gen(n + d + k))
    direct, pairwise = _seeds(x, k, "direct"), _seeds(x, k, "pairwise")
    assert torch.equal(direct, pairwise)
    assert direct.unique().numel() == k  # distinct rows: a chosen point has zero weight


def test_seeds_cover_well_separated_groups(blobs):
    x, y = blobs
    for method in ("direct", "pairwise"):
        idx = _seeds(x, 5, method, seed=3)
        assert sorted(y[idx.numpy()].tolist()) == [0, 1, 2, 3, 4], method


def test_same_generator_state_same_seeds_and_other_state_other_seeds():
    x = torch.randn(300, 8, generator=gen(1))
    assert torch.equal(_seeds(x, 10, "direct", seed=5), _seeds(x, 10, "direct", seed=5))
    assert not torch.equal(_seeds(x, 10, "direct", seed=5), _seeds(x, 10, "direct", seed=6))


@pytest.mark.parametrize("method", ["direct", "pairwise", "blocked"])
def test_a_padded_batch_makes_each_problem_s_own_choices(method):
    xs = [torch.randn(n, 6, generator=gen(n)) for n in (40, 25, 33)]
    xb, lens = pad_problems(xs)
    xb_sq = row_sq_norms(xb.reshape(-1, 6)).view(3, -1)
    batched = greedy_kmeans_plusplus(xb, xb_sq, 9, [gen(10 + i) for i in range(3)], lens.tolist(), method=method)
    for i, x in enumerate(xs):
        alone = _seeds(x, 9, method, seed=10 + i)
        assert torch.equal(batched[i], alone)
        assert int(batched[i].max()) < x.shape[0]  # padded rows are never drawn


def test_the_default_seeding_is_one_fixed_method():
    assert DEFAULT_SEEDING == "blocked" and check_seeding("pairwise") == "pairwise"
    assert n_trials_for(1) == 2 and n_trials_for(128) == 6
    with pytest.warns(FutureWarning, match="seeding='auto' is deprecated and now means 'blocked'"):
        assert check_seeding("auto") == "blocked"


@pytest.mark.parametrize("seeding", [None, "direct"])
@pytest.mark.parametrize(("n_max", "b"), [(300, 1), (300, 400), (1200, 30), (150, 50)])
def test_per_class_and_batched_picks_are_identical_across_the_old_threshold(n_max, b, seeding, one_thread):
    # the old 'auto' rule took the Gram-matrix path when B * N^2 <= 2**25 and N < 3 (K-1)(2 + ln K):
    # 300 rows and K=32 are under it alone (90,000 elements) but over it in a batch of 400 (3.6e7),
    # so a class alone and the same class in a batch were seeded differently. 150 rows are under
    # K * L = 160: the blocked seeding takes its rows from one N x N product there
    k = 32
    opts = {} if seeding is None else {"seeding": seeding}
    g = gen(n_max + b)
    lens = [n_max - (i * 7) % 40 for i in range(b)]
    xs = [torch.randn(n, 24, generator=g) + 3 * torch.randn(1, 24, generator=g) for n in lens]
    batch, lengths = pad_problems(xs)
    res = kmeans_batched(batch, k, lengths=lengths, generators=[gen(1000 + i) for i in range(b)], max_iter=20, **opts)
    for i in (0, b // 2, b - 1):
        alone = kmeans(xs[i], k, generator=gen(1000 + i), max_iter=20, **opts)
        assert torch.equal(res.labels[i, : lens[i]], alone.labels), i
        assert res.n_iter[i] == alone.n_iter
        # the centroids agree to rounding (the padded mean is summed over more rows) and the picks exactly
        assert torch.allclose(res.centroids[i], alone.centroids, rtol=1e-5, atol=1e-5)
        assert torch.equal(nearest_unique(xs[i], res.centroids[i])[0], nearest_unique(xs[i], alone.centroids)[0])


def test_small_pools_are_judged_by_their_own_size_only():
    assert small_pool(400, 128) and small_pool(400, 64) and not small_pool(400, 10)
    assert not small_pool(5000, 128) and not small_pool(10_000, 100_000)  # capped by GRAM_MAX_ROWS


def test_unknown_method_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"must be one of 'direct', 'pairwise', 'blocked', got 'gram'"):
        check_seeding("gram")


@pytest.mark.parametrize("k", [2, 9, 40])
def test_blocked_seeds_are_distinct_real_rows(k):
    x = torch.randn(300, 16, generator=gen(k))
    idx = _seeds(x, k, "blocked")
    assert idx.unique().numel() == k and int(idx.max()) < 300


def test_blocked_rejection_draws_from_the_same_distribution_as_direct():
    # 1-D points at very different distances; K=3 uses a block proposed for two steps, so the
    # second step's candidates go through the rejection test. Compare the distribution of the
    # chosen sets over many seeds (total variation distance).
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0], [31.0]])
    runs = 1500

    def freq(method):
        counts = {}
        for s in range(runs):
            key = tuple(sorted(_seeds(x, 3, method, seed=s).tolist()))
            counts[key] = counts.get(key, 0) + 1
        return counts

    a, b = freq("direct"), freq("blocked")
    tv = 0.5 * sum(abs(a.get(key, 0) - b.get(key, 0)) for key in set(a) | set(b)) / runs
    assert len(a) > 3  # several outcomes are likely: the test can tell distributions apart
    assert tv < 0.06, (tv, a, b)


def test_blocked_handles_pools_whose_weights_all_vanish():
    x = torch.zeros(50, 4)  # every point coincides: after the first seed every weight is 0
    idx = _seeds(x, 5, "blocked")
    assert idx.numel() == 5 and int(idx.max()) < 50


def test_the_seeding_option_is_validated_everywhere_it_is_accepted():
    from dream_plugin.engine.clustering import run_kmeans
    from dream_plugin.core.config import ConfigError
    from dream_plugin.strategies.dream import KMeansOptions

    x = torch.randn(50, 4, generator=gen(0))
    with pytest.raises(ValueError, match="seeding method must be one of .* got 'gram'"):
        kmeans(x, 3, seeding="gram")
    with pytest.raises(ValueError, match="seeding method must be one of"):
        kmeans_batched(x[None], 3, seeding="gram")
    with pytest.raises(ValueError, match="seeding='direct' is only available with backend 'torch'"):
        run_kmeans(x, 3, backend="sklearn", seeding="direct")
    with pytest.raises(ConfigError, match="seeding: 'direct' needs backend 'torch'"):
        KMeansOptions(seeding="direct", backend="sklearn")


def test_pinned_direct_and_pairwise_seeding_give_the_same_clustering():
    # 'direct' is what accelerators use by default: pinning it (or 'pairwise') gives the same
    # result on every device, up to rounding
    x = torch.randn(200, 32, generator=gen(4)) + 3 * torch.randint(0, 4, (200, 1), generator=gen(5))
    a = kmeans(x, 40, generator=gen(1), seeding="direct")
    b = kmeans(x, 40, generator=gen(1), seeding="pairwise")
    assert torch.equal(a.labels, b.labels)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-5)


def test_dream_strategy_takes_the_seeding_option_from_the_config(make_selector, tiny_pool, tiny_net):
    from dream_plugin.core.config import ConfigError

    pool = torch.arange(tiny_pool.shape[0])

    def load(positions):
        return tiny_pool[positions]

    picks = {}
    for method in ("direct", "blocked"):
        sel = make_selector(options={"dream": {"kmeans": {"seeding": method}}})
        picks[method] = sel.select(0, 3, pool, load, embed=tiny_net.embed, network=tiny_net)
        assert sel.strategy("dream").options.kmeans.seeding == method
    for p in picks.values():  # three well-separated groups: one pick in each, whatever the method
        assert sorted((p // 20).tolist()) == [0, 1, 2]
    with pytest.raises(ConfigError, match="seeding"):
        make_selector(options={"dream": {"kmeans": {"seeding": "gram"}}})


@pytest.mark.parametrize("seeding", ["direct", "pairwise", "blocked"])
def test_kmeans_centres_the_data_so_points_far_from_the_origin_stay_apart(seeding):
    # |x|^2 ~ 3e6 here: in float32, |x|^2 - 2 x.y + |y|^2 loses the unit-sized distances unless the
    # data are centred first; with K = N every point must become its own cluster (inertia 0)
    x = 1e3 + torch.randn(12, 3, generator=gen(2))
    res = kmeans(x, 12, generator=gen(0), seeding=seeding)
    assert res.inertia == pytest.approx(0.0, abs=1e-3)
    assert sorted(res.labels.tolist()) == list(range(12))
    res_b = kmeans_batched(x[None], 12, generators=[gen(0)], seeding=seeding)
    assert res_b.inertia[0] == pytest.approx(0.0, abs=1e-3)


def test_kmeans_centres_only_data_far_from_the_origin_and_scales_the_tolerance_by_the_variance():
    from dream_plugin.engine.clustering.centring import centre_far_problems

    g = torch.Generator().manual_seed(0)
    near = torch.randn(300, 16, generator=g) * 2 + 0.5  # offset 0.5 per feature, spread 2
    far = near + 1000.0
    for x, centred in ((near, False), (far, True)):
        before = x.clone()
        xf, x_sq, mu, mean_var = centre_far_problems(x[None], [300], None, owned=False)
        assert (mu is not None) == centred
        assert torch.equal(x, before)  # the caller's tensor is never written
        want = float(torch.var(x.double(), dim=0, correction=0).mean())
        assert float(mean_var[0]) == pytest.approx(want, rel=1e-4)
        assert torch.allclose(x_sq[0], xf[0].square().sum(1), rtol=1e-5)
    # one batch holding both: only the far problem is centred, padded rows stay zero
    xb, lens = pad_problems([near, far[:250]])
    xf, x_sq, mu, mean_var = centre_far_problems(xb.clone(), lens.tolist(), None, owned=True)
    assert torch.equal(xf[0], near) and float(mu[0].abs().max()) == 0.0
    real = torch.arange(300).unsqueeze(0) < lens.unsqueeze(1)
    xf, _, _, _ = centre_far_problems(xb.clone(), lens.tolist(), real, owned=True)
    assert bool((xf[1, 250:] == 0).all())  # padded rows stay zero
    assert float(xf[1, :250].mean(0).abs().max()) < 1e-2  # the far problem is centred on its real rows
    # same clustering either way: the shift only moves the centroids
    a = kmeans(near, 4, generator=torch.Generator().manual_seed(1))
    b = kmeans(far, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.centroids + 1000.0, b.centroids, atol=1e-2)


def _pair_frequencies(x: torch.Tensor, method: str, n_local_trials, runs: int) -> dict:
    counts: dict = {}
    for s in range(runs):
        idx = greedy_kmeans_plusplus(
            x[None], row_sq_norms(x)[None], 2, [gen(s)], method=method, n_local_trials=n_local_trials
        )[0]
        key = tuple(idx.tolist())  # (first seed, second seed)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_one_local_trial_is_classic_kmeans_plusplus():
    # classic k-means++ (Arthur & Vassilvitskii): the first seed uniform, the second drawn with
    # probability proportional to its squared distance from the first. Compare the empirical
    # distribution of (first, second) with that law; the greedy default (2 + ln 2 = 2 candidates,
    # the better kept) must be far from it, so the test can tell the two apart.
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    n = x.shape[0]
    d2 = (x - x.t()).square()
    exact = {(i, j): float(d2[i, j] / d2[i].sum()) / n for i in range(n) for j in range(n) if i != j}

    def tv(counts, runs):
        return 0.5 * sum(abs(counts.get(key, 0) / runs - p) for key, p in exact.items())

    classic = tv(_pair_frequencies(x, "direct", 1, 3000), 3000)
    greedy = tv(_pair_frequencies(x, "direct", None, 1000), 1000)
    assert classic < 0.05, classic  # 0.035 measured; sampling noise alone is about 0.03
    assert greedy > 0.15, greedy  # 0.20 measured
    # the other ways of getting the distances draw the same pairs from the same seeds
    for method in ("pairwise", "blocked"):
        assert _pair_frequencies(x, method, 1, 300) == _pair_frequencies(x, "direct", 1, 300), method


def test_n_local_trials_sets_the_candidates_per_step_and_is_validated_everywhere():
    from dream_plugin.engine.clustering import run_kmeans
    from dream_plugin.core.config import ConfigError
    from dream_plugin.strategies.dream import KMeansOptions

    assert n_trials_for(128) == 6 and n_trials_for(128, 1) == 1 and n_trials_for(10, 9) == 9
    x = torch.randn(60, 4, generator=gen(0))
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"n_local_trials must be None or an integer >= 1, got"):
            kmeans(x, 3, n_local_trials=bad)
        with pytest.raises(ValueError, match=r"n_local_trials must be None or an integer >= 1, got"):
            kmeans_batched(x[None], 3, n_local_trials=bad)
    with pytest.raises(ValueError, match=r"n_local_trials=2 is only available with backend 'torch'"):
        run_kmeans(x, 3, backend="sklearn", n_local_trials=2)
    with pytest.raises(ConfigError, match=r"n_local_trials: 0 is not allowed; expected an integer >= 1 or null"):
        KMeansOptions(n_local_trials=0)
    with pytest.raises(ConfigError, match=r"n_local_trials: 2 needs backend 'torch'"):
        KMeansOptions(n_local_trials=2, backend="sklearn")
    # every path takes it: single, batched, and each seeding method give valid distinct seeds
    for seeding in ("direct", "pairwise", "blocked"):
        res = kmeans(x, 7, generator=gen(1), seeding=seeding, n_local_trials=1)
        assert res.labels.unique().numel() == 7
        res_b = kmeans_batched(x[None], 7, generators=[gen(1)], seeding=seeding, n_local_trials=1)
        assert res_b.inertia[0] == pytest.approx(res.inertia, rel=1e-4)


def test_dream_strategy_and_precompute_take_n_local_trials_from_their_settings(
    make_selector, tiny_pool, tiny_net, tmp_path, capsys
):
    from dream_plugin.cli import main

    pool = torch.arange(tiny_pool.shape[0])
    sel = make_selector(options={"dream": {"kmeans": {"n_local_trials": 1}}})
    picks = sel.select(0, 3, pool, lambda p: tiny_pool[p], embed=tiny_net.embed, network=tiny_net)
    assert sel.strategy("dream").options.kmeans.n_local_trials == 1
    assert sorted((picks // 20).tolist()) == [0, 1, 2]  # three well-separated groups, one pick each
    with pytest.raises(Exception, match="n_local_trials"):
        make_selector(options={"dream": {"kmeans": {"n_local_trials": 0}}})
    out = tmp_path / "picks.pt"
    rc = main(["precompute", "--out", str(out), "--k", "2", "--synthetic", "2,10,3", "--n-local-trials", "0"])
    assert rc != 0 and not out.exists()  # refused before any work
    assert "n_local_trials: 0 is not allowed" in capsys.readouterr().err
    assert main(["precompute", "--out", str(out), "--k", "2", "--synthetic", "2,10,3", "--n-local-trials", "1",
                 "--no-progress"]) == 0
    assert torch.load(out, weights_only=False)["kmeans"]["n_local_trials"] == 1


@pytest.mark.parametrize("n_local_trials", [None, 1])
def test_blocked_seeding_hands_lloyd_the_same_first_assignment_as_the_assignment_step(n_local_trials):
    from dream_plugin.engine.clustering import nearest_centroid
    from dream_plugin.engine.clustering.seeding import blocked_seeds_and_assignment

    base = torch.randn(400, 16, generator=gen(3)) + 4 * torch.randint(0, 5, (400, 1), generator=gen(4))
    x = torch.cat([base, base[:40]])  # duplicated rows: ties must go to the earlier seed
    x = x - x.mean(0)
    k = 25
    assert not small_pool(x.shape[0], k)  # the blocked proposals, not the small-pool path
    idx, labels, dist = blocked_seeds_and_assignment(x, row_sq_norms(x), k, gen(9), n_trials_for(k, n_local_trials))
    ref_labels, ref_dist = nearest_centroid(x, x[idx])
    assert torch.equal(labels, ref_labels)
    assert torch.allclose(dist, ref_dist, atol=1e-3)
    assert torch.equal(labels[idx], torch.arange(k))  # each seed is its own nearest
    # and k-means seeded this way ends where the loop started from these seeds ends
    res = kmeans(x, k, generator=gen(9), seeding="blocked", n_local_trials=n_local_trials)
    ref = kmeans(x, k, init=x[idx].clone(), generator=gen(9))
    assert torch.equal(res.labels, ref.labels)
    assert res.inertia == pytest.approx(ref.inertia, rel=1e-5)


@pytest.mark.parametrize("shift", [0.0, 500.0])  # near the origin (used as is) and far (centred)
@pytest.mark.parametrize("seeding", ["direct", "pairwise", "blocked"])
def test_kmeans_never_writes_into_the_callers_tensor(seeding, shift):
    for dtype in (torch.float32, torch.float16):
        x = (torch.randn(120, 8, generator=gen(1)) + shift).to(dtype)
        before = x.clone()
        res = kmeans(x, 6, generator=gen(2), seeding=seeding)
        res_b = kmeans_batched(x[None], 6, generators=[gen(2)], seeding=seeding)
        assert torch.equal(x, before), (seeding, shift, dtype)
        assert res.centroids.dtype == dtype and res_b.centroids.dtype == dtype
        # centroids come back in the caller's frame, not the centred one: the reported inertia is
        # that of the returned centroids (to float16 rounding of the centroids)
        from dream_plugin.engine.clustering import nearest_centroid

        for r, c in ((res.inertia, res.centroids), (res_b.inertia[0], res_b.centroids[0])):
            recomputed = float(nearest_centroid(x.double(), c.double())[1].sum())
            assert recomputed == pytest.approx(r, rel=1e-2), (seeding, shift, dtype)


@pytest.mark.parametrize("shift", [0.0, 500.0])
def test_kmeans_batched_may_centre_a_scratch_copy_in_place_with_the_same_result(shift):
    xs = [torch.randn(n, 12, generator=gen(n)) + shift for n in (90, 70)]
    xb, lens = pad_problems(xs)
    xb[1, 70:] = 7.0  # padding need not be zero: it is ignored
    before = xb.clone()
    ref = kmeans_batched(xb, 5, lengths=lens, generators=[gen(1), gen(2)])
    assert torch.equal(xb, before)  # by default x is never written
    scratch = xb.clone()
    res = kmeans_batched(scratch, 5, lengths=lens, generators=[gen(1), gen(2)], overwrite_x=True)
    assert torch.equal(res.labels, ref.labels)
    assert torch.allclose(res.centroids, ref.centroids)
    assert res.inertia == pytest.approx(ref.inertia, rel=1e-6)
    # far from the origin the copy was centred in place (that is the copy it saves); near it, the
    # real rows are untouched (padded rows may be zeroed in place)
    real = torch.arange(xb.shape[1]).unsqueeze(0) < lens.unsqueeze(1)
    assert torch.equal(scratch[real], xb[real]) == (shift == 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gram_distances_of_small_pools_give_the_direct_loop_s_clustering(seed, one_thread):
    # a small pool iterates on X X^T; 'tf32' (fp32 arithmetic on the CPU) keeps the direct products
    x = torch.randn(200, 48, generator=gen(seed)) + 2 * torch.randint(0, 6, (200, 1), generator=gen(seed + 9))
    k = 24
    assert small_pool(x.shape[0], k)
    c0 = x[torch.randperm(200, generator=gen(seed))[:k]].clone()
    gram_run = kmeans(x, k, init=c0, max_iter=50)
    direct_run = kmeans(x, k, init=c0, max_iter=50, precision="tf32")
    assert torch.equal(gram_run.labels, direct_run.labels)
    assert gram_run.n_iter == direct_run.n_iter
    assert gram_run.inertia == pytest.approx(direct_run.inertia, rel=1e-5)
    assert torch.allclose(gram_run.centroids, direct_run.centroids, atol=1e-4)


def test_gram_distances_handle_empty_clusters_like_the_direct_loop(one_thread):
    x = torch.randn(150, 32, generator=gen(4)) + 3 * torch.randint(0, 5, (150, 1), generator=gen(5))
    k = 30
    c0 = x[:k].clone()
    c0[1::2] = c0[::2]  # every odd centroid duplicates its neighbour: those clusters start empty
    gram_run = kmeans(x, k, init=c0, max_iter=50)
    direct_run = kmeans(x, k, init=c0, max_iter=50, precision="tf32")
    assert torch.equal(gram_run.labels, direct_run.labels)
    assert gram_run.labels.unique().numel() == k
    assert gram_run.inertia == pytest.approx(direct_run.inertia, rel=1e-5)
