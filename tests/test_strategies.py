"""Built-in strategies through the selector: DREAM picks, re-clustering interval, DREAM+, coresets,
properties under hypothesis, and the no-side-effects rule."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dream_plugin.engine.clustering import nearest_unique, run_kmeans
from dream_plugin.core.config import InitSettings, Settings
from host_state_check import assert_same_state, state_fingerprint
from dream_plugin.core.selector import Selector, derive_seed
from dream_plugin.strategies import herding_order, kcenter_order


def select(sel, images, n, *, net=None, embed=None, kind="match", class_id=0):
    pool = torch.arange(images.shape[0])
    return sel.select(class_id, n, pool, lambda p: images[p], kind=kind, network=net,
                      embed=embed if embed is not None else (net.embed if net is not None else None))


def test_dream_picks_are_nearest_to_the_kmeans_centroids(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", seed=5)
    picks = select(sel, tiny_pool, 3, net=tiny_net)
    # recompute by hand: same embeddings, same derived generator, same engine
    with torch.no_grad():
        was = tiny_net.training
        tiny_net.eval()
        feats = tiny_net.embed(tiny_pool)
        tiny_net.train(was)
    g = torch.Generator().manual_seed(derive_seed(5, "match", 0, 0))
    res = run_kmeans(feats, 3, generator=g)
    expected, _ = nearest_unique(feats, res.centroids)
    if not tiny_net.training:
        assert torch.equal(picks, expected)
    # one pick from each of the three separated groups of 20 images
    assert sorted((picks // 20).tolist()) == [0, 1, 2]
    rec = sel.records[-1]
    assert rec.reclustered and rec.kmeans_iterations >= 1 and rec.inertia > 0 and rec.strategy == "dream"


def test_dream_matches_manual_pipeline_in_eval_mode(make_selector, tiny_pool, tiny_net):
    tiny_net.eval()
    sel = make_selector(strategy="dream", seed=1)
    picks = select(sel, tiny_pool, 4, net=tiny_net)
    with torch.no_grad():
        feats = tiny_net.embed(tiny_pool)
    res = run_kmeans(feats, 4, generator=torch.Generator().manual_seed(derive_seed(1, "match", 0, 0)))
    expected, _ = nearest_unique(feats, res.centroids)
    assert torch.equal(picks, expected)


def test_dream_reclusters_every_interval_calls(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", options={"dream": {"interval": 3}})
    calls = [select(sel, tiny_pool, 5, net=tiny_net) for _ in range(7)]
    flags = [r.reclustered for r in sel.records]
    assert flags == [True, False, False, True, False, False, True]
    assert torch.equal(calls[0], calls[1]) and torch.equal(calls[1], calls[2])


def test_dream_interval_is_per_class(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", options={"dream": {"interval": 2}})
    for c in (0, 1, 0, 1):
        select(sel, tiny_pool, 3, net=tiny_net, class_id=c)
    assert [r.reclustered for r in sel.records] == [True, True, False, False]
    sel.reset()
    select(sel, tiny_pool, 3, net=tiny_net)
    assert sel.records[-1].reclustered


def test_init_calls_always_recluster(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", options={"dream": {"interval": 100}})
    select(sel, tiny_pool, 3, net=tiny_net, kind="init")
    select(sel, tiny_pool, 3, net=tiny_net, kind="init")
    assert [r.reclustered for r in sel.records] == [True, True]
    assert {r.kind for r in sel.records} == {"init"}


def test_dream_plus_subsample(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", options={"dream": {"subsample": 2}})
    picks = select(sel, tiny_pool, 6, net=tiny_net)
    assert picks.numel() == 6 and torch.unique(picks).numel() == 6
    assert sel.records[-1].kmeans_iterations is not None


def test_dream_plus_subsample_must_divide_n(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream", options={"dream": {"subsample": 4}})
    with pytest.raises(ValueError, match=r"n=6 is not divisible by subsample=4; choose a subsample among the divisors of 6: 1, 2, 3, 6"):
        select(sel, tiny_pool, 6, net=tiny_net)


def test_dream_without_a_network_says_what_to_pass(make_selector, tiny_pool):
    sel = make_selector(strategy="dream")
    with pytest.raises(ValueError, match=r"needs embeddings, but no network is available for the 'init' call of class 0"):
        select(sel, tiny_pool, 3, kind="init")


def test_nan_embeddings_are_reported(make_selector, tiny_pool):
    sel = make_selector(strategy="dream")
    def bad_embed(x):
        out = x.flatten(1).clone()
        out[0, 0] = float("nan")
        return out
    with pytest.raises(ValueError, match=r"NaN|nan|inf"):
        select(sel, tiny_pool, 3, embed=bad_embed)


def test_integer_images_are_refused_by_name(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="dream")
    with pytest.raises((TypeError, ValueError), match=r"torch.uint8|uint8"):
        select(sel, (tiny_pool * 10).to(torch.uint8), 3, net=tiny_net)


def test_unavailable_device_is_refused(make_selector, tiny_pool, tiny_net):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    sel = make_selector(strategy="dream")
    with pytest.raises(ValueError, match=r"device: 'cuda(:0)?' was asked for but CUDA is not available here; pass the device"):
        sel.select(0, 3, torch.arange(60), lambda p: tiny_pool[p], embed=tiny_net.embed, device="cuda")


@pytest.mark.parametrize("name", ["herding", "kcenter"])
def test_coreset_strategies_return_n_unique(make_selector, tiny_pool, tiny_net, name):
    sel = make_selector(strategy=name)
    picks = select(sel, tiny_pool, 7, net=tiny_net)
    assert picks.numel() == 7 and torch.unique(picks).numel() == 7


def test_herding_first_pick_is_nearest_the_mean_and_kcenter_spreads():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    assert herding_order(x, 1).tolist() == [2]  # mean 3.25: nearest item is 2.0
    assert kcenter_order(x, 2).tolist() == [2, 3]  # starts nearest the mean, then the farthest


STRATEGIES = ["random", "dream", "herding", "kcenter"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(STRATEGIES),
    size=st.integers(min_value=1, max_value=40),
    data=st.data(),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_picks_are_n_unique_positions_and_reproducible(isolated_pm, name, size, data, seed):
    n = data.draw(st.integers(min_value=1, max_value=size))
    offset = data.draw(st.integers(min_value=0, max_value=1000))
    feats = torch.randn(size, 3, generator=torch.Generator().manual_seed(seed % 1000))
    pool = torch.arange(offset, offset + size)

    def run():
        sel = Selector(Settings(strategy=name, seed=seed), plugin_manager=isolated_pm)
        return sel.select(0, n, pool, lambda p: feats[p], embed=lambda x: x)

    a, b = run(), run()
    assert a.numel() == n and torch.unique(a).numel() == n
    assert int(a.min()) >= 0 and int(a.max()) < size
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ["dream", "herding", "kcenter"])
def test_selection_leaves_host_state_untouched(make_selector, tiny_pool, tiny_net, mode, name):
    tiny_net.train(mode == "train")
    tiny_net.classifier.weight.requires_grad_(False)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = state_fingerprint(tiny_net)
    np_before, py_before, torch_before = np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state()
    with torch.enable_grad():
        select(make_selector(strategy=name), tiny_pool, 5, net=tiny_net, kind="match")
        assert torch.is_grad_enabled()
    assert_same_state(before, state_fingerprint(tiny_net))
    assert np.array_equal(np.random.get_state()[1], np_before)
    assert random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert tiny_net.training == (mode == "train")
    assert not tiny_net.classifier.weight.requires_grad


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pending_backward_survives_a_selection(make_selector, tiny_pool, tiny_net, mode):
    tiny_net.train(mode == "train")
    loss = tiny_net(tiny_pool[:8]).pow(2).sum()
    select(make_selector(strategy="dream"), tiny_pool, 4, net=tiny_net)
    loss.backward()
    assert tiny_net.features[0].weight.grad is not None


def test_init_only_and_match_only_arms(make_selector, tiny_pool, tiny_net):
    sel = make_selector(strategy="random", init=InitSettings(strategy="dream"))
    select(sel, tiny_pool, 3, net=tiny_net, kind="init")
    select(sel, tiny_pool, 3, net=tiny_net, kind="match")
    assert [(r.kind, r.strategy) for r in sel.records] == [("init", "dream"), ("match", "random")]
