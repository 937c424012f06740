"""GetImagesAdapter in DC/DSA-, DM- and MTT-like hosts: both A/B arms, records, side effects, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dream_plugin.adapters import AmbiguousCallError, GetImagesAdapter, NoNetworkError, wrap_get_images, wrap_mtt_get_images
from dream_plugin.core.config import PluginSettings, parse_settings
from dream_plugin.engine.embedding import resolve_embedder
from dream_plugin.engine.host_state import snapshot_rng
from host_state_check import assert_same_state, state_fingerprint
from dream_plugin.core.hookspecs import hookimpl
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector

from fakehosts.data import class_index_lists, clustered_images
from fakehosts.gradient_matching import run_dc_like
from fakehosts.nets import EmbedConvNet, host_constructor
from fakehosts.trajectory import run_mtt_like_init

FAST = {"dream": {"interval": 2, "kmeans": {"max_iter": 20}}}


def make_selector(strategy="dream", **kw):
    kw.setdefault("options", FAST)
    settings = parse_settings({"strategy": strategy, **kw})
    return Selector(settings, plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def dc_line(selector_factory, **extra):
    """The user's one line in a DC-like host (a fresh selector per experiment, like the default)."""

    def line(*, get_images, images_all, indices_class, live_net, factory, ipc, bn_n, batch_real):
        return wrap_get_images(get_images, images_all, indices_class, net=live_net, net_factory=factory,
                               init_n=ipc, bn_n=bn_n, selector=selector_factory(), **extra)

    return line


def same_trace(a, b):
    assert len(a.calls) == len(b.calls)
    for (ka, ca, xa), (kb, cb, xb) in zip(a.calls, b.calls):
        assert (ka, ca) == (kb, cb) and torch.equal(xa, xb)
    assert np.array_equal(a.numpy_after, b.numpy_after)
    assert torch.equal(a.torch_after, b.torch_after)


# -- the random arm is the host's own code path ---------------------------------------------------
@pytest.mark.parametrize("host", [
    dict(model="conv", bn=True),
    dict(model="mlp"),
    dict(model="conv", bn=True, dataparallel=True),
    dict(model="conv", dm=True),
])
def test_random_arm_returns_exactly_what_the_host_returns(host):
    reference = run_dc_like(None, **host)
    wrapped = run_dc_like(dc_line(lambda: make_selector("random")), **host)
    same_trace(reference, wrapped)
    records = [r for a in wrapped.adapters for r in a.records]
    assert {r.kind for r in records} == ({"init", "match", "bn"} if host.get("bn") and not host.get("dm") else {"init", "match"})
    assert all(r.answered_by == "host sampler" and r.embed_source == "none" for r in records)
    assert {r.strategy for r in records if r.kind == "bn"} <= {"host"}
    assert {r.strategy for r in records if r.kind != "bn"} == {"random"}


def test_env_switch_flips_the_arm_without_code_change(monkeypatch):
    monkeypatch.setenv("DREAM_PLUGIN_DISABLE_AUTOLOAD", "1")
    line = dc_line(lambda: None)  # selector=None: built from the environment
    monkeypatch.setenv("DREAM_STRATEGY", "random")
    reference = run_dc_like(None, num_exp=1, iterations=1)
    same_trace(reference, run_dc_like(line, num_exp=1, iterations=1))
    monkeypatch.setenv("DREAM_STRATEGY", "dream")
    dream = run_dc_like(line, num_exp=1, iterations=1)
    records = dream.adapters[0].records
    assert {r.strategy for r in records} == {"dream"}
    assert {r.kind for r in records} == {"init", "match"}
    init = [r for r in records if r.kind == "init"]
    assert all(r.embed_source == "fresh network from net_factory EmbedConvNet via net.embed" for r in init)
    assert all(r.embed_source == "live network EmbedConvNet via net.embed" for r in records if r.kind == "match")


# -- the DREAM arm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", [
    dict(model="conv", bn=True),
    dict(model="mlp"),
    dict(model="conv", bn=True, dataparallel=True),
    dict(model="conv", dm=True),
])
def test_dream_arm_runs_the_whole_host_loop(host):
    shared = make_selector("dream")
    trace = run_dc_like(dc_line(lambda: shared), **host)
    for kind, _c, x in trace.calls:
        assert x.dtype == torch.float32 and x.device.type == "cpu"
    kinds = {(r.kind, r.strategy) for r in shared.records}
    assert ("match", "dream") in kinds and ("init", "dream") in kinds
    if host.get("bn") and not host.get("dm"):
        assert ("bn", "host") in kinds  # the BN-statistics batch stays the host's own draw
    sources = {r.embed_source for r in shared.records if r.kind == "match"}
    assert len(sources) == 1
    src = sources.pop()
    assert src.startswith("live network")
    if host.get("dataparallel"):
        assert "unwrapped from DataParallel" in src
    if host["model"] == "mlp":
        assert "input of last Linear" in src


def test_dream_arm_picks_equal_direct_selection():
    images, labels = clustered_images(3, 24)
    indices_class = class_index_lists(labels, 3)
    torch.manual_seed(0)
    net = EmbedConvNet(bn=True).train()
    fresh = EmbedConvNet()
    host_calls = []
    adapter = GetImagesAdapter(lambda c, n: host_calls.append((c, n)), images, indices_class,
                               net=lambda: net, net_factory=lambda: fresh, selector=make_selector("dream"),
                               init_n=3, bn_n=16)
    reference = make_selector("dream")
    for kind, n in (("init", 3), ("match", 6), ("match", 6), ("match", 6)):
        for c in range(3):
            got = adapter(c, n) if kind == "match" else adapter.init(c, n)
            used = fresh if kind == "init" else net
            pool = torch.tensor(indices_class[c])
            pos = reference.select(c, n, pool, lambda p: images[pool[p]], kind=kind,
                                   embed=resolve_embedder(used)[0], network=used)
            assert torch.equal(got, images[pool[pos]])
            assert got.shape[0] == n
    assert host_calls == []  # the host's sampler is not called in the DREAM arm
    assert [r.reclustered for r in adapter.records if r.kind == "match" and r.class_id == 0] == [True, False, True]


def test_dream_picks_one_representative_per_group():
    images, labels = clustered_images(2, 30, groups=3)
    indices_class = class_index_lists(labels, 2)
    adapter = wrap_get_images(lambda c, n: None, images, indices_class, net=nn.Identity(),
                              embed_fn=lambda x: x.flatten(1), selector=make_selector("dream"))
    for c in range(2):
        got = adapter.match(c, 3)
        # each pick comes from a different one of the class's three tight groups
        d = torch.cdist(got.flatten(1), got.flatten(1))
        assert float(d[~torch.eye(3, dtype=bool)].min()) > 1.0


def test_dream_selection_leaves_host_state_and_rngs_alone():
    images, labels = clustered_images(3, 24)
    indices_class = class_index_lists(labels, 3)
    torch.manual_seed(1)
    net = nn.DataParallel(EmbedConvNet(bn=True)).train()
    adapter = wrap_get_images(lambda c, n: None, images, indices_class, net=lambda: net,
                              net_factory=lambda: host_constructor("conv", bn=True), init_n=2,
                              selector=make_selector("dream"))
    np.random.seed(7)
    expected_next = np.random.rand(3)
    np.random.seed(7)
    before = state_fingerprint(net.module)
    adapter.init(0)
    adapter.match(1, 8)
    adapter(2, 8)
    assert_same_state(before, state_fingerprint(net.module))
    assert np.array_equal(np.random.rand(3), expected_next)  # the host's next numpy draws are unchanged


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_pending_backward_survives_a_dream_selection(bn_mode):
    images, labels = clustered_images(3, 24)
    indices_class = class_index_lists(labels, 3)
    torch.manual_seed(2)
    net = EmbedConvNet(bn=True).train()
    if bn_mode == "eval":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    adapter = wrap_get_images(lambda c, n: None, images, indices_class, net=lambda: net,
                              selector=make_selector("dream"))
    loss = nn.functional.cross_entropy(net(images[:10]), labels[:10])
    rng = snapshot_rng()
    adapter.match(0, 8)
    loss.backward()  # must not fail with an in-place modification error
    assert all(p.grad is not None for p in net.parameters())
    assert torch.equal(rng.torch_cpu, torch.get_rng_state())


def test_bn_batch_can_use_the_strategy():
    shared = make_selector("dream", bn_batch="strategy")
    run_dc_like(dc_line(lambda: shared), model="conv", bn=True, num_exp=1, iterations=1, outer_loop=1)
    assert {(r.kind, r.strategy) for r in shared.records if r.kind == "bn"} == {("bn", "dream")}


def test_init_strategy_can_differ_from_matching():
    shared = make_selector("dream", init={"strategy": "random"})
    trace = run_dc_like(dc_line(lambda: shared), num_exp=1, iterations=1)
    assert {(r.kind, r.strategy) for r in shared.records} == {("init", "random"), ("match", "dream")}
    assert len(trace.calls) == 3 + 3 * 2


# -- errors -------------------------------------------------------------------------------------------
def test_dream_init_without_factory_is_a_clear_error():
    line = lambda **kw: wrap_get_images(kw["get_images"], kw["images_all"], kw["indices_class"],  # noqa: E731
                                        net=kw["live_net"], init_n=kw["ipc"], selector=make_selector("dream"))
    with pytest.raises(NoNetworkError, match="net_factory"):
        run_dc_like(line, num_exp=1)


def test_random_init_without_factory_still_works():
    shared = make_selector("dream", init={"strategy": "random"})
    line = lambda **kw: wrap_get_images(kw["get_images"], kw["images_all"], kw["indices_class"],  # noqa: E731
                                        net=kw["live_net"], init_n=kw["ipc"], selector=shared)
    run_dc_like(line, num_exp=1, iterations=1)


def test_missing_init_n_says_so():
    line = lambda **kw: wrap_get_images(kw["get_images"], kw["images_all"], kw["indices_class"],  # noqa: E731
                                        net=kw["live_net"], selector=make_selector("dream"))
    with pytest.raises(NoNetworkError, match="init_n"):
        run_dc_like(line, num_exp=1)


def dc_line_full(arm, **extra):
    """The documented DC line with every size given (init_n, bn_n, match_n), a fresh selector per experiment."""

    def line(*, get_images, images_all, indices_class, live_net, factory, ipc, bn_n, batch_real):
        return wrap_get_images(get_images, images_all, indices_class, net=live_net, net_factory=factory,
                               init_n=ipc, bn_n=bn_n, match_n=batch_real, selector=make_selector(arm), **extra)

    return line


def kinds_seen(trace):
    return [(r.kind, r.class_id, r.n) for a in trace.adapters for r in a.records]


@pytest.mark.parametrize("arm", ["random", "dream"])
@pytest.mark.parametrize("host", [
    dict(model="conv", batch_real=16),            # plain ConvNet, --batch_real 16 == the BN batch size
    dict(model="conv", ipc=4, batch_real=4),      # --batch_real equal to --ipc
    dict(model="conv", bn=True, ipc=16 // 4, batch_real=8),
    dict(model="mlp", batch_real=16),
    dict(model="conv", dm=True, ipc=4, batch_real=4),
])
def test_valid_host_command_shapes_construct_and_run_in_both_arms(arm, host):
    reference = run_dc_like(None, **host)
    wrapped = run_dc_like(dc_line_full(arm), **host)
    # every call got the kind the host meant, in both arms
    assert kinds_seen(wrapped) == [(k, c, x.shape[0]) for k, c, x in reference.calls]
    if arm == "random":
        same_trace(reference, wrapped)


def test_bn_model_with_batch_real_16_runs_in_the_random_arm_and_is_a_clear_error_only_in_dream():
    host = dict(model="conv", bn=True, batch_real=16)
    reference = run_dc_like(None, **host)
    wrapped = run_dc_like(dc_line_full("random"), **host)
    same_trace(reference, wrapped)  # the host sampler answered both kinds, unchanged
    notes = {r.note for a in wrapped.adapters for r in a.records if r.n == 16}
    assert notes == {"kind not told apart (bn or match); the host sampler answers both"}
    with pytest.raises(AmbiguousCallError, match=r"a bn or a match call .*bn: host sampler, match: strategy:dream.*integrate"):
        run_dc_like(dc_line_full("dream"), **host)


def test_marked_call_sites_are_never_guessed():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    holder = {"net": None}
    adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=lambda: holder["net"], init_n=16, bn_n=16,
                               match_n=16, selector=make_selector("random"))
    assert adapter.candidate_kinds(0, 16) == ["init"]
    holder["net"] = host_constructor("conv", bn=True)
    assert adapter.candidate_kinds(0, 16) == ["bn", "match"]
    adapter.bn(0, 16)
    adapter.match(0, 16)
    adapter.init(0, 16)
    assert [r.kind for r in adapter.records] == ["bn", "match", "init"]


def test_init_is_inferred_only_before_the_host_builds_a_network():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    holder = {"net": None}
    adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=lambda: holder["net"], init_n=4,
                               selector=make_selector("random"))
    assert adapter.candidate_kinds(0, 4) == ["init"]
    holder["net"] = host_constructor("conv")  # the host has started training
    assert adapter.candidate_kinds(0, 4) == ["match"]
    # without a live lookup: the first init-sized call of a class is init, later ones match
    plain = GetImagesAdapter(lambda c, n: images[:n], images, ic, init_n=4, selector=make_selector("random"))
    plain(0, 4)
    plain(0, 4)
    assert [r.kind for r in plain.records] == ["init", "match"]


def test_bn_is_inferred_only_for_a_batchnorm_network():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    holder = {"net": host_constructor("conv")}
    adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=lambda: holder["net"], bn_n=16,
                               selector=make_selector("random"))
    assert adapter.candidate_kinds(0, 16) == ["match"]
    holder["net"] = host_constructor("conv", bn=True)
    assert adapter.candidate_kinds(0, 16) == ["bn"]


def test_wrong_types_and_sizes():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    with pytest.raises(TypeError, match="get_images"):
        GetImagesAdapter(None, images, ic)
    with pytest.raises(TypeError, match="images_all"):
        GetImagesAdapter(lambda c, n: None, images.numpy(), ic)
    with pytest.raises(TypeError, match="indices_class"):
        GetImagesAdapter(lambda c, n: None, images, 3)
    adapter = GetImagesAdapter(lambda c, n: None, images, ic, net=EmbedConvNet(), selector=make_selector("dream"))
    with pytest.raises(TypeError, match="n must be an int"):
        adapter(0, 2.5)
    with pytest.warns(RuntimeWarning, match=r"get_images\(0, 25\): n exceeds the 24 images of class 0; the whole "
                                            r"class pool is returned, as the host sampler does"):
        assert adapter.match(0, 25).shape[0] == 24  # as the host's permutation(...)[:n] does
    with pytest.raises(IndexError, match="class 5 is out of range"):
        adapter.match(5, 2)


def test_observer_sees_both_arms():
    seen = []

    class Observer:
        @hookimpl
        def selection_done(self, record):
            seen.append((record.kind, record.strategy, record.answered_by))

    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    for strategy in ("random", "dream"):
        sel = make_selector(strategy)
        sel.pm.register(Observer())
        adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=EmbedConvNet(), selector=sel)
        adapter.match(0, 4)
    assert seen == [("match", "random", "host sampler"), ("match", "dream", "strategy:dream")]


# -- MTT: init only, no network exists ---------------------------------------------------------------
def test_mtt_init_random_arm_is_the_host():
    reference, _ = run_mtt_like_init(None)
    line = lambda **kw: wrap_mtt_get_images(**kw, selector=make_selector("random"))  # noqa: E731
    wrapped, adapter = run_mtt_like_init(line)
    assert torch.equal(reference, wrapped)
    assert {(r.kind, r.strategy) for r in adapter.records} == {("init", "random")}


def test_mtt_init_dream_uses_a_fresh_features_net():
    line = lambda **kw: wrap_mtt_get_images(  # noqa: E731
        **kw, net_factory=lambda: host_constructor("features"), selector=make_selector("dream"))
    syn, adapter = run_mtt_like_init(line)
    assert syn.shape == (9, 1, 8, 8)
    assert {r.embed_source for r in adapter.records} == {"fresh network from net_factory FeaturesNet via net.features + flatten"}
    line = lambda **kw: wrap_mtt_get_images(**kw, selector=make_selector("dream"))  # noqa: E731
    with pytest.raises(NoNetworkError, match="net_factory"):
        run_mtt_like_init(line)


def _dc_host(images, ic):
    """The DC/DSA/DM hosts' own get_images, unchanged."""
    def get_images(c, n):
        return images[np.random.permutation(ic[c])[:n]]

    return get_images


@pytest.mark.parametrize("strategy", ["random", "dream"])
def test_every_arm_gives_the_same_answer_to_a_host_bug(strategy):
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    sel = make_selector(strategy)
    adapter = GetImagesAdapter(_dc_host(images, ic), images, ic, net=EmbedConvNet(), selector=sel)
    # n above the pool: the host returns the whole pool, so every arm does (the dream arm with a warning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert adapter.match(1, 30).shape[0] == 24
    assert sel.records[-1].n == 30
    # a negative or too large class id: one message in every arm, before anything is drawn
    for c in (-1, 3):
        with pytest.raises(IndexError) as info:
            adapter.match(c, 2)
        assert str(info.value).startswith(f"get_images({c}, 2): class {c} is out of range; the host sampler has "
                                          "classes 0..2 (indices_class)")
    assert "a negative id would silently read class 2" in str(pytest.raises(IndexError, adapter.match, -1, 2).value)


@pytest.mark.parametrize("strategy", ["random", "dream"])
@pytest.mark.parametrize("n, got", [(0, "no image"), (-1, "all but the last 1 image of the class"),
                                    (-3, "all but the last 3 images of the class")])
def test_a_size_below_one_is_one_message_in_every_arm(strategy, n, got):
    from dream_plugin.adapters.host_answer import HostSamplerError

    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    calls = []
    host = _dc_host(images, ic)
    sel = make_selector(strategy)
    adapter = GetImagesAdapter(lambda c, k: calls.append((c, k)) or host(c, k), images, ic, net=EmbedConvNet(),
                               selector=sel)
    for call in (lambda: adapter.match(1, n), lambda: adapter(1, n)):
        with pytest.raises(HostSamplerError) as info:
            call()
        assert str(info.value) == (f"get_images(1, {n}): n must be >= 1 in every arm; the host sampler's "
                                   f"permutation(indices_class[1])[:{n}] would return {got}")
    assert calls == [] and sel.records == []  # refused before anything is drawn or counted


@pytest.mark.parametrize("answer, message", [
    (lambda images: images[:3], "the host sampler's get_images(0, 5) returned 3 images (shape (3, "),
    (lambda images: images[:3], "); expected 5"),
    (lambda images: None, "the host sampler's get_images(0, 5) returned NoneType, not a tensor of images"),
    (lambda images: [images[0]], "the host sampler's get_images(0, 5) returned list, not a tensor of images"),
])
def test_an_unusable_host_answer_is_refused_naming_the_host_sampler(answer, message):
    from dream_plugin.adapters.host_answer import HostSamplerError

    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    sel = make_selector("random")
    adapter = GetImagesAdapter(lambda c, n: answer(images), images, ic, selector=sel)
    with pytest.raises(HostSamplerError) as info:
        adapter.match(0, 5)
    assert message in str(info.value) and str(info.value).count("\n") == 0
    assert sel.records[-1].note == f"unusable answer: {str(info.value)}"


def test_the_random_arm_stays_byte_identical_to_the_unmodified_host():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    host = _dc_host(images, ic)
    adapter = GetImagesAdapter(host, images, ic, selector=make_selector("random"))
    calls = [(0, 5), (1, 24), (2, 30), (1, 1)]  # n above the pool included: the host returns the whole pool
    np.random.seed(7)
    expected = [host(c, n) for c, n in calls]
    after_host = np.random.get_state()[1].copy()
    np.random.seed(7)
    got = [adapter.match(c, n) for c, n in calls]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert np.array_equal(np.random.get_state()[1], after_host)  # the host's generator advanced exactly as alone
