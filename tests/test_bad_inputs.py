"""Bad input to the library (not the command line): each is refused with a message naming it.

Rows of docs/errors.md; the command-line rows live in test_cli.py, test_ab_output.py, test_export.py
and test_precompute.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dream_plugin.adapters import GetImagesAdapter
from dream_plugin.common.inputs import as_int, is_integer
from dream_plugin.core.config import PluginSettings, Settings
from dream_plugin.engine.embedding import embed_images
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.harness.mosaic import mosaic
from dream_plugin.core.selector import Selector

from fakehosts.data import class_index_lists, clustered_images
from fakehosts.nets import EmbedConvNet

FAST = {"dream": {"interval": 2, "kmeans": {"max_iter": 10}}}


def selector(strategy: str = "dream") -> Selector:
    return Selector(Settings(strategy=strategy, options=FAST), plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def load_from(images):
    return lambda pos: images[pos]


# -- adapters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=np.int64), torch.tensor([], dtype=torch.long)])
def test_empty_indices_class_says_the_class_has_no_images(empty):
    images, labels = clustered_images(3, 12)
    ic = class_index_lists(labels, 3)
    ic[1] = empty
    adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=EmbedConvNet(), selector=selector())
    with pytest.raises(ValueError, match=r"^class 1 has no images: indices_class\[1\] is empty$"):
        adapter.match(1, 2)
    assert adapter.match(0, 2).shape[0] == 2  # the other classes still work


# -- the selector's request validation -----------------------------------------------------------------
def test_pool_with_duplicate_indices_is_refused_naming_them():
    images = torch.randn(20, 1, 8, 8)
    pool = torch.tensor([0, 1, 2, 3, 3, 4, 7, 7, 7])
    with pytest.raises(ValueError, match=r"the pool of class 2 lists 2 index\(es\) more than once: 3, 7; each image "
                                         r"must appear once"):
        selector("random").select(2, 2, pool, load_from(images))


def test_pool_duplicates_are_refused_for_every_strategy_before_any_work():
    images = torch.randn(20, 1, 8, 8)
    calls = []

    def load(pos):
        calls.append(pos)
        return images[pos]

    for strategy in ("random", "dream", "herding", "kcenter"):
        with pytest.raises(ValueError, match="more than once: 5"):
            selector(strategy).select(0, 2, [5, 6, 5, 8], load, embed=lambda x: x.flatten(1))
    assert calls == []


# -- embedding ---------------------------------------------------------------------------------------
def test_embedding_that_returns_1d_is_refused_with_its_shape():
    images = torch.randn(6, 1, 8, 8)
    with pytest.raises(ValueError, match=r"the embedder returned shape \(6,\) for a batch of 6 images; expected "
                                         r"\(batch, features\)"):
        embed_images(lambda x: x.flatten(1).sum(1), images)


def test_selector_reports_a_1d_embedding_too():
    images = torch.randn(12, 1, 8, 8)
    with pytest.raises(Exception, match=r"returned shape \(12,\)"):
        selector("dream").select(0, 3, torch.arange(12), load_from(images), embed=lambda x: x.flatten(1).mean(1))


def test_meta_device_network_gets_a_clear_message():
    with torch.device("meta"):
        net = EmbedConvNet()
    images = torch.randn(12, 1, 8, 8)
    with pytest.raises(ValueError, match=r"the network \(EmbedConvNet\) has parameters on the meta device \(shapes "
                                         r"only, no values\); materialise it first"):
        embed_images(net.embed, images, network=net)
    with pytest.raises(Exception, match=r"meta device"):
        selector("dream").select(0, 3, torch.arange(12), load_from(images), embed=net.embed, network=net)


# -- numpy integers wherever an int is taken -------------------------------------------------------------
@pytest.mark.parametrize("np_int", [np.int64(4), np.int32(4), np.uint16(4), torch.tensor(4)])
def test_numpy_integers_are_accepted_wherever_an_int_is(np_int):
    images = torch.randn(12, 1, 8, 8)
    sel = selector("dream")
    assert sel.select(0, np_int, torch.arange(12), load_from(images), embed=lambda x: x.flatten(1)).numel() == 4
    assert sel.select(np.int64(1), np_int, np.arange(12), load_from(images), embed=lambda x: x.flatten(1)).numel() == 4
    assert embed_images(lambda x: x.flatten(1), load_from(images), n=np.int64(12), batch_size=np_int).shape == (12, 64)
    assert mosaic(torch.randn(16, 1, 8, 8), np.int64(2)).shape == (4, 1, 8, 8)
    assert Settings(seed=np_int, embed_batch_size=np_int).seed == 4
    ic = class_index_lists(torch.arange(12) % 3, 3)
    adapter = GetImagesAdapter(lambda c, n: images[:n], images, ic, net=EmbedConvNet(), selector=sel)
    assert adapter.match(np.int64(2), np_int).shape[0] == 4


@pytest.mark.parametrize("bad", [True, np.bool_(True), 2.0, np.float64(2.0), "2", torch.tensor([1, 2]), torch.tensor(2.0)])
def test_non_integers_are_refused_by_the_same_rule(bad):
    assert not is_integer(bad)
    with pytest.raises(TypeError, match=r"^n must be an int, got "):
        as_int(bad, "n")
    with pytest.raises(TypeError, match=r"n must be an int"):
        selector("random").select(0, bad, torch.arange(12), load_from(torch.randn(12, 1, 8, 8)))
