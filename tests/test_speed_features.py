"""Speed features of selection: batched k-means, padding, embedding cache, warm start, seeding,
precision options and the GPU benchmark script on CPU. No timing assertions (see benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dream_plugin.engine.clustering import (
    INIT_METHODS,
    kmeans,
    kmeans_batched,
    pad_problems,
    run_kmeans,
)
from dream_plugin.core.config import Settings
from dream_plugin.harness.models import ConvNet
from dream_plugin.core.requests import SelectionRequest
from dream_plugin.core.selector import Selector
from dream_plugin.strategies.dream import DreamOptions, DreamStrategy, KMeansOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def gens(n: int, base: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def blob_problems(sizes, d=12, centres=6, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        c = torch.randn(centres, d, generator=g) * 6
        out.append(c[torch.randint(centres, (n,), generator=g)] + torch.randn(n, d, generator=g) + shift)
    return out


# --------------------------------------------------------------------------- batched k-means
@pytest.mark.parametrize("init", ["k-means++", "random", "k-means++-sampled"])
def test_batched_equals_per_problem_runs(init):
    xs = blob_problems((150, 90, 120, 40))
    x, lengths = pad_problems(xs)
    res = kmeans_batched(x, 6, lengths=lengths, init=init, generators=gens(4))
    for b, xb in enumerate(xs):
        single = kmeans(xb, 6, init=init, generator=gens(4)[b])
        rb = res.result(b)
        assert rb.inertia == pytest.approx(single.inertia, rel=1e-5)
        assert torch.equal(rb.labels, single.labels)
        assert torch.allclose(rb.centroids, single.centroids, atol=1e-4)
        assert rb.n_iter == single.n_iter


@pytest.mark.parametrize(("k", "gram_path"), [(40, True), (4, False)])
def test_problems_that_stop_at_different_iterations_each_get_their_own_result(k, gram_path):
    # well separated blobs stop after a few iterations, plain noise much later: the batch keeps a
    # stopped problem in its slot until half have stopped, then compacts; none of that may show
    from dream_plugin.engine.clustering.seeding import small_pool

    g = torch.Generator().manual_seed(7)
    sizes = (120, 100, 120, 90, 120, 110, 120, 80)
    xs = [blob_problems((n,), d=10, centres=k, seed=i)[0] if i % 3 == 0 else torch.randn(n, 10, generator=g)
          for i, n in enumerate(sizes)]
    assert all(small_pool(n, k) == gram_path for n in sizes)
    x, lengths = pad_problems(xs)
    res = kmeans_batched(x, k, lengths=lengths, generators=gens(len(xs), 50))
    assert len(set(res.n_iter)) >= 3, res.n_iter  # several stopping points, so several retirements
    for b, xb in enumerate(xs):
        alone = kmeans(xb, k, generator=gens(len(xs), 50)[b])
        assert res.n_iter[b] == alone.n_iter and res.converged[b] == alone.converged
        assert torch.equal(res.result(b).labels, alone.labels), b
        assert torch.allclose(res.centroids[b], alone.centroids, rtol=1e-5, atol=1e-5)
        assert res.inertia[b] == pytest.approx(alone.inertia, rel=1e-5)


def test_padding_is_never_used():
    # data far from the origin: a padded (zero) row would be an outlier no centroid could ignore
    xs = blob_problems((60, 25, 8), shift=50.0, seed=3)
    x, lengths = pad_problems(xs)
    for init in ("k-means++", "random"):
        res = kmeans_batched(x, 8, lengths=lengths, init=init, generators=gens(3))
        assert bool((res.centroids.norm(dim=2) > 20).all())  # no centroid at or pulled to a zero row
        for b, n in enumerate(lengths.tolist()):
            assert bool((res.labels[b, n:] == -1).all())
            assert bool((res.labels[b, :n] >= 0).all())
        # K == rows of the smallest problem: every real row becomes its own cluster, inertia 0
        assert res.inertia[2] == pytest.approx(0.0, abs=0.1)  # float32 rounding of |x|^2 ~ 3e4
        assert sorted(res.labels[2, :8].tolist()) == list(range(8))


def test_batched_padding_with_non_finite_pad_values_is_ignored():
    xs = blob_problems((30, 20))
    x, lengths = pad_problems(xs)
    x[1, 20:] = float("nan")  # garbage in padded rows must not matter
    res = kmeans_batched(x, 3, lengths=lengths, generators=gens(2))
    single = kmeans(xs[1], 3, generator=gens(2)[1])
    assert res.inertia[1] == pytest.approx(single.inertia, rel=1e-5)


def test_batched_warm_start_from_converged_centroids():
    xs = blob_problems((100, 80))
    x, lengths = pad_problems(xs)
    first = kmeans_batched(x, 6, lengths=lengths, generators=gens(2))
    again = kmeans_batched(x, 6, lengths=lengths, init=first.centroids, generators=gens(2, 50))
    assert max(again.n_iter) <= 2  # converged start: stops at once
    assert torch.allclose(again.centroids, first.centroids, atol=1e-5)
    assert again.inertia == pytest.approx(first.inertia, rel=1e-6)


def test_batched_validation():
    x = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_batched(x, 6, lengths=[10, 5])
    with pytest.raises(ValueError, match="one generator per problem"):
        kmeans_batched(x, 2, generators=gens(3))
    with pytest.raises(ValueError, match=r"\(B, K, D\)"):
        kmeans_batched(x, 2, init=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="precision"):
        kmeans_batched(x, 2, precision="fp8")
    bad = torch.randn(3, 10, 3)
    bad[1, 4, 2] = float("nan")
    bad[2, 7, 0] = float("inf")  # a padded row of problem 2 (length 6): ignored
    with pytest.raises(ValueError, match=r"x contains NaN or inf values \(problem 1, rows \[4\]\)"):
        kmeans_batched(bad, 2, lengths=[10, 10, 6])
    bad[1, 4, 2] = 0.0
    assert kmeans_batched(bad, 2, lengths=[10, 10, 6]).labels[2, 6:].eq(-1).all()


# --------------------------------------------------------------------------- seeding / precision
def test_sampled_seeding_is_valid_and_deterministic():
    assert "k-means++-sampled" in INIT_METHODS
    x = torch.cat(blob_problems((1500,), d=8, centres=4))
    a = kmeans(x, 4, init="k-means++-sampled", generator=torch.Generator().manual_seed(1))
    b = kmeans(x, 4, init="k-means++-sampled", generator=torch.Generator().manual_seed(1))
    full = kmeans(x, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.labels, b.labels)
    assert a.inertia <= full.inertia * 1.05
    for backend in ("sklearn",):
        r = run_kmeans(x, 4, backend=backend, init="k-means++-sampled", seed=0)
        assert r.inertia <= full.inertia * 1.05


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_is_fp32_on_cpu(precision):
    x = torch.cat(blob_problems((200,)))
    a = kmeans(x, 5, generator=torch.Generator().manual_seed(0), precision=precision)
    b = kmeans(x, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.labels, b.labels) and a.inertia == pytest.approx(b.inertia)
    with pytest.raises(ValueError, match="only available with backend 'torch'"):
        run_kmeans(x, 5, backend="sklearn", precision=precision)


# --------------------------------------------------------------------------- strategy
def _net(norm="instancenorm"):
    torch.manual_seed(0)
    return ConvNet(1, 3, 8, width=8, depth=2, norm=norm)


def _data(n=60):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g)


LOADS = {"n": 0}  # a module global: loaders read it by name (not a captured value)


class Counter:
    """Counts image loads (an embedding pass loads the pool; a cache hit loads nothing)."""

    @property
    def calls(self):
        return LOADS["n"]


def _selector(**dream):
    dream.setdefault("embedding_cache", True)
    return Selector(Settings(strategy="dream", options={"dream": {"interval": 1, **dream}}))


def _select(sel, net, images, counter, n=5, c=0):
    pool = torch.arange(images.shape[0])

    def load(pos):
        LOADS["n"] += 1
        return images[pool[pos]]

    return sel.select(c, n, pool, load, embed=net.embed, network=net)


def test_embedding_cache_reuses_until_an_optimizer_step():
    net, images, cnt = _net(), _data(), Counter()
    sel = _selector()
    first = _select(sel, net, images, cnt)
    loads = cnt.calls
    second = _select(sel, net, images, cnt)
    strat = sel.strategy("dream")
    assert cnt.calls == loads  # no images loaded: embeddings reused
    assert strat.embedding_hits == 1 and sel.records[-1].embed_seconds == 0.0
    assert sel.records[-1].reclustered  # still re-clustered (interval 1), from cached features
    assert first.shape == second.shape
    # an optimizer step bumps the parameters' version counters -> fresh embedding pass
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(images[:4]).sum().backward()
    opt.step()
    _select(sel, net, images, cnt)
    assert cnt.calls > loads and strat.embedding_misses == 2


def test_embedding_cache_sees_batchnorm_buffer_updates_and_mode_changes():
    net, images, cnt = _net("batchnorm"), _data(), Counter()
    sel = _selector()
    strat = sel.strategy("dream")
    _select(sel, net, images, cnt)
    _select(sel, net, images, cnt)
    assert strat.embedding_hits == 1
    net.train()
    with torch.no_grad():
        net(images[:8])  # train-mode forward updates running_mean/var in place
    before = cnt.calls
    _select(sel, net, images, cnt)
    assert cnt.calls > before and strat.embedding_hits == 1
    net.eval()  # eval mode embeds differently: must not reuse
    before = cnt.calls
    _select(sel, net, images, cnt)
    assert cnt.calls > before and strat.embedding_hits == 1


def test_embedding_cache_sees_new_network_images_and_can_be_off():
    images, cnt = _data(1100), Counter()  # > 65,536 elements: tracked by identity and version
    sel = _selector()
    strat = sel.strategy("dream")
    _select(sel, _net(), images, cnt)
    _select(sel, _net(), images, cnt)  # a new network with identical values: identity differs
    assert strat.embedding_hits == 0
    net = _net()
    _select(sel, net, images, cnt)
    images.add_(0.0)  # in-place write to the images: version bump
    _select(sel, net, images, cnt)
    assert strat.embedding_hits == 0
    _select(sel, net, images, cnt)
    assert strat.embedding_hits == 1
    small = _data()  # small CPU tensors are compared by value
    _select(sel, net, small, cnt)
    _select(sel, net, small.clone(), cnt)  # same values, other tensor: reuse is correct
    assert strat.embedding_hits == 2
    small.add_(1.0)
    _select(sel, net, small, cnt)
    assert strat.embedding_hits == 2
    off = _selector(embedding_cache=False)
    _select(off, net, images, cnt)
    _select(off, net, images, cnt)
    assert off.strategy("dream").embedding_hits == 0


def test_cached_embeddings_give_the_same_picks():
    net, images = _net(), _data()
    a, b = _selector(), _selector(embedding_cache=False)
    for _ in range(3):
        pa = _select(a, net, images, Counter())
        pb = _select(b, net, images, Counter())
        assert torch.equal(pa, pb)


def test_warm_start_restarts_from_previous_centroids():
    net, images = _net(), _data()
    sel = _selector(warm_start=True)
    p1 = _select(sel, net, images, Counter(), n=6)
    p2 = _select(sel, net, images, Counter(), n=6)
    assert sel.records[-1].kmeans_iterations <= 2  # started at a fixed point
    assert torch.equal(p1, p2)
    cold = _selector(warm_start=False)
    _select(cold, net, images, Counter(), n=6)
    _select(cold, net, images, Counter(), n=6)
    assert cold.records[-1].kmeans_iterations >= sel.records[-1].kmeans_iterations


def _requests(net, images, classes=3, n=4, step=0):
    reqs = []
    per = images.shape[0] // classes
    for c in range(classes):
        pool = torch.arange(c * per, (c + 1) * per - c)  # unequal pool sizes -> padding

        def load(pos, _p=pool):
            return images[_p[pos]]

        reqs.append(SelectionRequest(
            class_id=c, n=n, pool=pool, load=load, embed=net.embed, step=step,
            generator=torch.Generator().manual_seed(100 + c), device=torch.device("cpu"), network=net,
        ))
    return reqs


def test_select_many_batched_matches_per_class_select():
    net, images = _net(), _data(90)
    batched = DreamStrategy(DreamOptions(interval=1))
    single = DreamStrategy(DreamOptions(interval=1, batched=False))
    out_b = batched.select_many(_requests(net, images))
    out_s = [single.select(r) for r in _requests(net, images)]
    for rb, rs in zip(out_b, out_s):
        assert torch.equal(rb.positions, rs.positions)
        assert rb.inertia == pytest.approx(rs.inertia, rel=1e-5)
        assert rb.extra["batched_classes"] == 3
    # the interval cache works through select_many too
    again = DreamStrategy(DreamOptions(interval=2))
    again.select_many(_requests(net, images))
    second = again.select_many(_requests(net, images))
    assert not any(r.reclustered for r in second)


def test_precision_option_validation():
    from dream_plugin.core.config import ConfigError

    with pytest.raises(ConfigError, match="needs backend 'torch'"):
        KMeansOptions(precision="bf16", backend="sklearn")


# --------------------------------------------------------------------------- GPU script on CPU
@pytest.mark.quick
def test_gpu_benchmark_script_runs_on_cpu():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), "--device", "cpu", "--quick"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| ours fp32, one class |" in out.stdout
    assert "full re-selection fp32" in out.stdout
    assert "seeding=pairwise (Gram path)" in out.stdout
    assert "full re-selection fp32, n_local_trials=1" in out.stdout


@pytest.mark.quick
def test_selection_benchmark_seeding_section_runs(tmp_path):
    # the documented `python -m benchmarks.run` command, smallest section: it must run, and its
    # rows must show what docs/speed.md says of the three seeding methods
    import json

    out_json = tmp_path / "seeding.json"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--threads", "1", "--sections", "seeding",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out_json.read_text())["seeding"]
    by = {(r["data"], r["K"], r["method"]): r for r in rows}
    cases = {(d, k) for d, k, _ in by}
    assert len(cases) == 6 and len(rows) == 18  # 3 data sets x K in (10, 64) x 3 methods
    for d, k in cases:
        direct, pairwise, blocked = (by[(d, k, m)]["mean_potential"] for m in ("direct", "pairwise", "blocked"))
        assert pairwise == pytest.approx(direct, rel=1e-3)  # same choices up to rounding
        # blocked draws from the same distribution but another random stream: one seed per method in
        # --quick is too few to compare (tests/test_seeding.py compares the distributions)
        assert 0 < blocked < float("inf")


@pytest.mark.quick
def test_engine_comparison_against_a_checkout_times_both_sides(tmp_path):
    # `python -m benchmarks.compare_engine --baseline PATH`: each side is the dream_plugin of its own
    # checkout (the child says which one it imported); here both sides are this checkout, so every
    # row is present on both, and a folder without dream_plugin is refused before any work
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out_json = tmp_path / "rows.json"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare_engine", "--baseline", ROOT, "--quick", "--rounds", "1",
         "--repeats", "1", "--json", str(out_json)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out_json.read_text())
    assert len(rows) == 3 * 2 * 3 + 2  # 3 data sets x K in (10, 64) x 3 variants, and the 10-class loop / batch
    assert all(r["baseline_s"] > 0 and r["this_s"] > 0 and r["ratio"] == r["this_s"] / r["baseline_s"] for r in rows)
    assert "| mnist 10 classes K=64 ours, kmeans_batched |" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.compare_engine", "--baseline", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert bad.returncode == 2 and "holds no dream_plugin package" in bad.stderr
