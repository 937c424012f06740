"""NetworkSource: live vs fresh network, unwrapping, embedder description, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dream_plugin.adapters.network import NetworkSource, NoNetworkError, make_normalizer
from dream_plugin.engine.host_state import snapshot_rng

from fakehosts.nets import EmbedConvNet, FeaturesNet, PlainMLP, ReturnFeaturesNet, host_constructor


def _unassigned_lambda():
    def host():
        getter = lambda: net  # noqa: E731 - the user's `net=lambda: net` before the host assigns net
        src = NetworkSource(net=getter)
        live = src.live()
        net = EmbedConvNet()  # noqa: F841 - assigned after, as in the host
        return live

    return host()


def test_unassigned_name_means_no_network():
    assert _unassigned_lambda() is None


def test_none_means_no_network_and_needs_raise():
    src = NetworkSource(net=lambda: None)
    assert src.resolve("match", needs=False) is None
    with pytest.raises(NoNetworkError, match="no network yet"):
        src.resolve("match")
    with pytest.raises(NoNetworkError, match="net=lambda: net"):
        NetworkSource().resolve("match")


def test_init_never_uses_live_network_and_needs_factory():
    stale = EmbedConvNet()
    src = NetworkSource(net=lambda: stale)
    with pytest.raises(NoNetworkError, match="net_factory"):
        src.resolve("init")
    assert src.resolve("init", needs=False) is None  # a random init still works

    fresh_built = []

    def factory():
        fresh_built.append(EmbedConvNet())
        return fresh_built[-1]

    src = NetworkSource(net=lambda: stale, net_factory=factory)
    r1 = src.resolve("init")
    r2 = src.resolve("init")
    assert r1.network is fresh_built[0] and r2.network is fresh_built[0] and len(fresh_built) == 1
    assert r1.network is not stale
    assert r1.source == "fresh network from net_factory EmbedConvNet via net.embed"
    assert src.resolve("match").network is stale
    src.reset()
    assert src.resolve("init").network is fresh_built[1]


def test_factory_that_reseeds_torch_leaves_host_rng_alone():
    torch.manual_seed(123)
    before = snapshot_rng()
    src = NetworkSource(net_factory=lambda: host_constructor("conv"))
    src.resolve("init")
    after = snapshot_rng()
    assert torch.equal(before.torch_cpu, after.torch_cpu)


@pytest.mark.parametrize(
    "net, expected",
    [
        (EmbedConvNet(), "live network EmbedConvNet via net.embed"),
        (FeaturesNet(), "live network FeaturesNet via net.features + flatten"),
        (ReturnFeaturesNet(), "live network ReturnFeaturesNet via net(x, return_features=True)"),
        (PlainMLP(), "live network PlainMLP via input of last Linear 'fc_out'"),
        (nn.DataParallel(EmbedConvNet()), "live network EmbedConvNet (unwrapped from DataParallel) via net.embed"),
    ],
)
def test_embed_source_descriptions(net, expected):
    r = NetworkSource(net=lambda: net).resolve("match")
    assert r.source == expected
    assert not isinstance(r.network, nn.DataParallel)
    channels = 3 if isinstance(net, ReturnFeaturesNet) else 1
    assert r.embed(torch.randn(4, channels, 8, 8)).shape[0] == 4


def test_normalize_is_folded_into_the_embedder():
    net = EmbedConvNet(channels=3)
    r = NetworkSource(net=net, normalize=([0.5] * 3, [0.25] * 3)).resolve("match")
    assert "normalised images" in r.source
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(r.embed(x), net.embed((x - 0.5) / 0.25))


def test_bad_arguments():
    with pytest.raises(TypeError, match="zero-argument callable"):
        NetworkSource(net=3)
    with pytest.raises(TypeError, match="net_factory"):
        NetworkSource(net_factory=EmbedConvNet())
    with pytest.raises(TypeError, match="normalize"):
        make_normalizer("imagenet")
    with pytest.raises(TypeError, match="must return an nn.Module"):
        NetworkSource(net=lambda: "net").live()
