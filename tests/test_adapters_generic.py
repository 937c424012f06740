"""Generic pieces: ClassSampler, RepresentativeBatchSampler with a DataLoader, MTT expert batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dream_plugin.adapters import ClassSampler, RepresentativeBatchSampler, RepresentativeBatches, make_class_sampler
from dream_plugin.core.config import PluginSettings, parse_settings
from host_state_check import assert_same_state, state_fingerprint
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector

from fakehosts.data import clustered_images
from fakehosts.nets import FeaturesNet
from fakehosts.trajectory import train_expert


def make_selector(strategy="dream"):
    return Selector(parse_settings({"strategy": strategy, "options": {"dream": {"interval": 1, "kmeans": {"max_iter": 20}}}}),
                    plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def test_class_sampler_both_strategies():
    x, y = clustered_images(3, 20)
    for strategy in ("random", "dream"):
        sel = make_selector(strategy)
        sampler = make_class_sampler(x, y, net=FeaturesNet(), selector=sel)
        got = sampler(1, 5)
        assert got.shape == (5, 1, 8, 8)
        idx = sampler.indices("match", 1, 5)
        assert bool((y[idx] == 1).all())
        assert sel.records[0].strategy == strategy
    with pytest.raises(ValueError, match="labels"):
        ClassSampler(x, y[:-1])
    with pytest.raises(ValueError, match="kind"):
        ClassSampler(x, y, kind="bn")


def test_batch_sampler_with_a_dataloader():
    x, y = clustered_images(3, 20)
    torch.manual_seed(0)
    net = FeaturesNet().train()
    sel = make_selector("dream")
    bs = RepresentativeBatchSampler(y, 4, dataset_images=x, net=lambda: net, selector=sel, num_batches=3)
    before = state_fingerprint(net)
    index_lists = list(bs)
    assert_same_state(before, state_fingerprint(net))  # (a DataLoader itself draws a base seed from torch)
    assert len(index_lists) == 3
    batches = list(DataLoader(TensorDataset(x, y), batch_sampler=bs))
    assert len(batches) == 3
    for img, lab in batches:
        assert img.shape == (12, 1, 8, 8)
        assert torch.bincount(lab, minlength=3).tolist() == [4, 4, 4]  # class-balanced
    assert {r.kind for r in sel.records} == {"match"} and len(sel.records) == 18
    with pytest.raises(TypeError, match="exactly one"):
        RepresentativeBatchSampler(y, 4)
    # load= instead of a tensor
    bs2 = RepresentativeBatchSampler(y, 2, load=lambda idx: x[idx], net=lambda: net, selector=make_selector("dream"))
    assert len(bs2) == 10 and len(next(iter(bs2))) == 6


def test_expert_batches_are_optional_and_follow_the_switch():
    x, y = clustered_images(3, 20)
    host_loader = DataLoader(TensorDataset(x, y), batch_size=12, shuffle=True)
    teacher = [FeaturesNet()]
    sel = make_selector("dream")
    batches = RepresentativeBatches(TensorDataset(x, y), 12, net=lambda: teacher[0], selector=sel, host_sampler=host_loader)
    assert len(batches) == 5
    assert train_expert(teacher[0], batches) == 5
    assert sel.records and all(r.strategy == "dream" and r.embed_source.startswith("live network FeaturesNet")
                               for r in sel.records)
    # random arm: the host's own loader, untouched
    rnd_sel = make_selector("random")
    rnd = RepresentativeBatches((x, y), 12, net=lambda: teacher[0], selector=rnd_sel, host_sampler=host_loader)
    torch.manual_seed(5)
    mine = [b[1] for b in rnd]
    torch.manual_seed(5)
    theirs = [b[1] for b in host_loader]
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs)) and len(mine) == len(theirs)
    # each host batch is recorded (class -1: every class in one batch), so both arms show up
    assert [(r.class_id, r.n, r.answered_by, r.pool_size) for r in rnd_sel.records] == [(-1, 12, "host sampler", 60)] * 5
    assert all(r.kind == "match" and "host's own loader" in r.note for r in rnd_sel.records)


def test_every_adapter_names_the_host_sampler_the_same_way():
    from dream_plugin.adapters import wrap_class_loader, wrap_get_images

    from fakehosts.class_loader import MemClassLoader
    from fakehosts.data import class_index_lists

    x, y = clustered_images(3, 20)
    host_loader = DataLoader(TensorDataset(x, y), batch_size=12)
    old = RepresentativeBatches((x, y), 12, net=lambda: None, selector=make_selector("random"), fallback=host_loader)
    assert old.host_sampler is host_loader and old.fallback is host_loader
    with pytest.raises(TypeError, match="not both"):
        RepresentativeBatches((x, y), 12, net=lambda: None, host_sampler=host_loader, fallback=host_loader)
    get_images = lambda c, n: x[:n]  # noqa: E731
    assert wrap_get_images(get_images, x, class_index_lists(y, 3), selector=make_selector("random")).host_sampler is get_images
    loader = MemClassLoader(x, y, 4)
    assert wrap_class_loader(loader, selector=make_selector("random")).host_sampler is loader


def test_every_adapter_implements_the_written_interface_the_harness_draws_through():
    from dream_plugin.harness.ab.loops import Sampler
    from dream_plugin.adapters import (
        Adapter, ClassLoaderAdapter, GetImagesAdapter, HostLoopSampler, KindSampler, wrap_class_loader, wrap_get_images,
    )

    from fakehosts.class_loader import MemClassLoader
    from fakehosts.data import class_index_lists

    x, y = clustered_images(3, 20)
    sel = make_selector("random")
    get_images = wrap_get_images(lambda c, n: x[:n], x, class_index_lists(y, 3), selector=sel)
    adapters = [
        get_images, ClassSampler(x, y, selector=sel), RepresentativeBatchSampler(y, 2, dataset_images=x, selector=sel),
        RepresentativeBatches((x, y), 12, net=lambda: None, selector=sel), wrap_class_loader(MemClassLoader(x, y, 4), selector=sel),
    ]
    assert all(isinstance(a, Adapter) and a.records is sel.records for a in adapters)
    assert [isinstance(a, KindSampler) for a in adapters] == [True, True, False, False, False]
    assert isinstance(get_images, HostLoopSampler) and not isinstance(ClassSampler(x, y, selector=sel), HostLoopSampler)
    assert Sampler is HostLoopSampler and isinstance(adapters[4], ClassLoaderAdapter)
    assert isinstance(get_images, GetImagesAdapter) and get_images.bn(1, 3).shape == (3, *x.shape[1:])
