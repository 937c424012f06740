"""ClassLoaderAdapter in an IDC-like host: proxying, both arms, raw images, labels, pool access."""

from __future__ import annotations

import warnings

import pytest
import torch

from dream_plugin.adapters import ClassLoaderAdapter, NoNetworkError, wrap_class_loader
from dream_plugin.core.config import PluginSettings, parse_settings
from dream_plugin.engine.embedding import resolve_embedder
from host_state_check import assert_same_state, state_fingerprint
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector

from fakehosts.class_loader import DatasetClassLoader, MemClassLoader, OpaqueClassLoader, run_idc_like
from fakehosts.data import clustered_images
from fakehosts.nets import ReturnFeaturesNet, host_constructor

MEAN, STD = 0.5, 0.25
NORM = ([MEAN] * 3, [STD] * 3)


def make_selector(strategy="dream", **kw):
    kw.setdefault("options", {"dream": {"interval": 2, "kmeans": {"max_iter": 20}}})
    return Selector(parse_settings({"strategy": strategy, **kw}),
                    plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def data(uint8=False):
    x, y = clustered_images(3, 20, channels=3, raw=True)
    if uint8:
        x = (x * 255).round().to(torch.uint8)
    return x, y


def build():
    return host_constructor("return_features", channels=3)


def run(loader_factory, adapt=None, **kw):
    loader = loader_factory()
    if adapt is not None:
        loader = adapt(loader)
    return run_idc_like(loader, build, classes=3, **kw), loader


@pytest.mark.parametrize("make", [
    lambda: MemClassLoader(*data(), batch_size=8),
    lambda: MemClassLoader(*data(uint8=True), batch_size=8),
    lambda: DatasetClassLoader(*data(), batch_size=8),
])
def test_random_arm_is_the_hosts_loader(make):
    reference, _ = run(make)
    wrapped, loader = run(make, lambda ld: ClassLoaderAdapter(ld, net=None, images_per_class=2,
                                                              selector=make_selector("random")))
    assert len(reference) == len(wrapped)
    for (k1, c1, x1, y1), (k2, c2, x2, y2) in zip(reference, wrapped):
        assert (k1, c1) == (k2, c2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    # initialisation got the class's first images, as the host does
    inner = loader.loader
    first = torch.stack([inner._stack([i])[0] if hasattr(inner, "_stack") else inner.dataset[i][0]
                         for i in inner.cls_idx[0][:2]])
    assert torch.equal(wrapped[0][2], first)
    assert {(r.kind, r.strategy, r.answered_by) for r in loader.records} == {
        ("init", "random", "host sampler"), ("match", "random", "host sampler")}


@pytest.mark.parametrize("make", [
    lambda: MemClassLoader(*data(uint8=True), batch_size=8),
    lambda: DatasetClassLoader(*data(), batch_size=8),
    lambda: OpaqueClassLoader(*data(), batch_size=8),
])
def test_dream_arm_in_the_host_loop(make):
    sel = make_selector("dream")
    kwargs = dict(net=lambda: current[0], net_factory=build, normalize=NORM, images_per_class=2, selector=sel)
    current = [None]

    def adapt(ld):
        if isinstance(ld, OpaqueClassLoader):
            kwargs["class_sizes"] = [20, 20, 20]
        return wrap_class_loader(ld, **kwargs)

    def tracking_build():  # the host's model variable, seen by net=lambda: ...
        current[0] = build()
        return current[0]

    loader = adapt(make())
    calls = run_idc_like(loader, tracking_build, classes=3)
    for kind, c, img, lab in calls:
        n = 2 if kind == "init" else 8
        assert img.shape == (n, 3, 8, 8) and img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0  # raw images, never normalised
        assert lab.dtype == torch.int64 and torch.equal(lab, torch.full((n,), c))
    assert {(r.kind, r.strategy) for r in sel.records} == {("init", "dream"), ("match", "dream")}
    src = {r.embed_source for r in sel.records if r.kind == "match"}
    assert src == {"live network ReturnFeaturesNet via net(x, return_features=True) on normalised images "
                   "(mean/std normalisation over 3 channel(s))"}


def test_dream_picks_equal_direct_selection_on_normalised_embeddings():
    x, y = data(uint8=True)
    mem = MemClassLoader(x, y, batch_size=6)
    torch.manual_seed(3)
    net = ReturnFeaturesNet().train()
    adapter = ClassLoaderAdapter(mem, net=lambda: net, normalize=NORM, selector=make_selector("dream"))
    reference = make_selector("dream")
    emb, _ = resolve_embedder(net)
    for c in range(3):
        img, lab = adapter.class_sample(c)
        pool = torch.tensor(mem.cls_idx[c])
        load = lambda p, pool=pool: mem._stack(pool[p].tolist())  # noqa: E731
        pos = reference.select(c, 6, pool, load, kind="match", embed=lambda t: emb((t - MEAN) / STD), network=net)
        assert torch.equal(img, load(pos))
        assert torch.equal(lab, torch.full((6,), c))


def test_proxying_and_whole_class_passthrough():
    mem = MemClassLoader(*data(), batch_size=8)
    adapter = ClassLoaderAdapter(mem, net=ReturnFeaturesNet(), normalize=NORM, selector=make_selector("dream"))
    assert len(adapter) == len(mem) and adapter.device == "cpu" and adapter.nclass == 3
    assert adapter.cls_idx is mem.cls_idx
    assert sum(1 for _ in adapter) == len(mem)
    whole, _ = adapter.class_sample(0, 20)  # the official DREAM code fetches a whole class like this
    assert torch.equal(whole, mem.class_sample(0, 20)[0])
    # a fetch, not a selection: recorded as the host loader's answer, with the reason
    (rec,) = adapter.records
    assert (rec.class_id, rec.n, rec.pool_size, rec.answered_by) == (0, 20, 20, "host sampler")
    assert rec.strategy == "dream" and rec.inertia is None and "whole class" in rec.note
    with pytest.raises(AttributeError):
        adapter.no_such_attribute


def test_dream_selection_leaves_the_model_alone_and_backward_works():
    mem = MemClassLoader(*data(), batch_size=8)
    torch.manual_seed(4)
    net = ReturnFeaturesNet().train()
    adapter = ClassLoaderAdapter(mem, net=lambda: net, normalize=NORM, selector=make_selector("dream"))
    x, y = mem.class_sample(1, 10)
    loss = torch.nn.functional.cross_entropy(net((x - MEAN) / STD), y)
    before = state_fingerprint(net)
    adapter.class_sample(0)
    assert_same_state(before, state_fingerprint(net))
    loss.backward()


def test_init_needs_a_factory_and_missing_normalize_warns():
    mem = MemClassLoader(*data(), batch_size=8)
    adapter = ClassLoaderAdapter(mem, net=lambda: ReturnFeaturesNet(), images_per_class=2, selector=make_selector("dream"))
    with pytest.raises(NoNetworkError, match="net_factory"):
        adapter.class_sample(0, 2)
    with pytest.warns(RuntimeWarning, match="normalize"):
        adapter.class_sample(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.class_sample(1)  # warned once only


def test_multi_formation_size_and_explicit_calls():
    mem = MemClassLoader(*data(), batch_size=8)
    sel = make_selector("dream", init={"factor": 2})
    adapter = ClassLoaderAdapter(mem, net=lambda: ReturnFeaturesNet(), net_factory=build, normalize=NORM,
                                 images_per_class=2, selector=sel)
    assert adapter.init_sizes == (2, 8)
    img, lab = adapter.class_sample(0, 8)
    assert img.shape[0] == 8 and sel.records[-1].kind == "init"
    img, lab = adapter.class_sample(0, 5)  # a size that is not an init size: a matching batch of 5
    assert img.shape[0] == 5 and sel.records[-1].kind == "match"
    adapter.init_sample(1, 3)
    assert sel.records[-1].kind == "init"
    adapter.match_sample(1)
    assert sel.records[-1].kind == "match" and sel.records[-1].n == 8


def test_bad_arguments():
    with pytest.raises(TypeError, match="class_sample"):
        ClassLoaderAdapter(object())
    with pytest.raises(TypeError, match="pool_access='index'"):
        ClassLoaderAdapter(DatasetClassLoader(*data(), batch_size=8), pool_access="index")
    opaque = ClassLoaderAdapter(OpaqueClassLoader(*data(), batch_size=8), net=ReturnFeaturesNet(), normalize=NORM,
                                selector=make_selector("dream"))
    with pytest.raises(TypeError, match="class_sizes"):
        opaque.class_sample(0)
    with pytest.raises(TypeError, match="must be an int"):
        opaque.class_sample(0, "all")
