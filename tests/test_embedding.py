"""Tests for dream_plugin.engine.embedding: how features are found and computed."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.engine.embedding import embed_images, resolve_embedder, unwrap_network
from host_state_check import assert_same_state, state_fingerprint

IMG = (3, 8, 8)


def _conv_block(dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Dropout(dropout),
    )


class DCNet(nn.Module):
    """DC/DSA/DM style: ``features`` + ``embed`` + ``classifier``."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.features = _conv_block(dropout)
        self.classifier = nn.Linear(64, 5)

    def embed(self, x):
        return self.features(x).view(x.shape[0], -1)

    def forward(self, x):
        return self.classifier(self.embed(x))


class MTTNet(nn.Module):
    """MTT style: ``features`` + ``classifier``, no ``embed``."""

    def __init__(self):
        super().__init__()
        self.features = _conv_block()
        self.classifier = nn.Linear(64, 5)

    def forward(self, x):
        return self.classifier(self.features(x).reshape(x.shape[0], -1))


class IDCNet(nn.Module):
    """IDC style: ``forward(x, return_features=False)`` -> (logits, features)."""

    def __init__(self):
        super().__init__()
        self.layers = _conv_block()
        self.classifier = nn.Linear(64, 5)

    def forward(self, x, return_features=False):
        out = self.layers(x).view(x.shape[0], -1)
        logit = self.classifier(out)
        if return_features:
            return logit, out
        return logit


class PlainConvNet(nn.Module):
    """No embed/features/return_features: only the last Linear's input."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.body = _conv_block(dropout)
        self.hidden = nn.Linear(64, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(F.relu(self.hidden(self.body(x).flatten(1))))


class NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def _pool(n: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *IMG, generator=g)


def _warm(net: nn.Module) -> nn.Module:
    net.train()
    with torch.no_grad():
        net(_pool(8, seed=1) * 2 + 0.5)
    return net


# ------------------------------------------------------------------ resolution


@pytest.mark.parametrize(
    "make, description, by_hand",
    [
        (DCNet, "net.embed", lambda n, x: n.features(x).flatten(1)),
        (MTTNet, "net.features + flatten", lambda n, x: n.features(x).flatten(1)),
        (IDCNet, "net(x, return_features=True)", lambda n, x: n.layers(x).flatten(1)),
        (
            PlainConvNet,
            "input of last Linear 'head'",
            lambda n, x: F.relu(n.hidden(n.body(x).flatten(1))),
        ),
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(192, 7), nn.Tanh(), nn.Linear(7, 2)),
            "input of last Linear '3'",
            lambda n, x: torch.tanh(n[1](x.flatten(1))),
        ),
    ],
)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_resolution_paths_match_hand_computed(make, description, by_hand, mode):
    net = _warm(make())
    net.train(mode == "train")
    x = _pool(6)
    embedder, desc = resolve_embedder(net)
    assert desc == description
    reference = copy.deepcopy(net)  # train-mode BN by hand would move the buffers
    with torch.no_grad():
        expected = by_hand(reference, x)
    feats = embed_images(embedder, x, network=net)
    assert feats.shape == (6, expected.shape[1])
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected)


@pytest.mark.parametrize(
    "method, description",
    [
        ("embed", "net.embed"),
        ("features", "net.features + flatten"),
        ("last_linear", "input of last Linear 'classifier'"),
    ],
)
def test_explicit_method(method, description):
    net = DCNet().eval()
    embedder, desc = resolve_embedder(net, method=method)
    assert desc == description
    x = _pool(4)
    with torch.no_grad():
        expected = net.features(x).flatten(1)
    torch.testing.assert_close(embed_images(embedder, x, network=net), expected)


def test_explicit_method_unavailable():
    with pytest.raises(TypeError, match="method='embed' but MTTNet has no callable 'embed'"):
        resolve_embedder(MTTNet(), method="embed")
    with pytest.raises(TypeError, match="takes no 'return_features'"):
        resolve_embedder(DCNet(), method="return_features")
    with pytest.raises(TypeError, match="method='last_linear' but NoLinear has no nn.Linear"):
        resolve_embedder(NoLinear(), method="last_linear")
    with pytest.raises(TypeError, match="method='features' but NoLinear has no callable 'features'"):
        resolve_embedder(NoLinear(), method="features")


def test_auto_finds_nothing_names_every_way():
    with pytest.raises(TypeError, match=r"cannot tell how to embed images with NoLinear: give embed_fn=\.\.\. .*"
                                        r"an 'embed' method, a 'features' submodule, a forward accepting "
                                        r"'return_features', or an nn\.Linear layer"):
        resolve_embedder(NoLinear())


def test_integer_images_are_refused_before_embedding():
    net = DCNet().eval()
    embedder, _ = resolve_embedder(net)
    with pytest.raises(TypeError, match=r"images must be floating point, got dtype torch\.uint8; convert"):
        embed_images(embedder, torch.zeros(4, 3, 8, 8, dtype=torch.uint8), network=net)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown embedding method 'kmeans'.*auto, embed, features"):
        resolve_embedder(DCNet(), method="kmeans")


def test_no_way_to_embed_names_class_and_options():
    with pytest.raises(TypeError) as info:
        resolve_embedder(NoLinear())
    msg = str(info.value)
    for part in ("NoLinear", "embed_fn=", "'embed'", "'features'", "return_features", "nn.Linear"):
        assert part in msg


def test_embedding_module_attribute_is_not_an_embed_method():
    net = PlainConvNet()
    net.embed = nn.Embedding(3, 2)  # a layer called 'embed' is not an image embedder
    assert resolve_embedder(net)[1] == "input of last Linear 'head'"


def test_user_embed_fn_one_and_two_arguments():
    net = DCNet().eval()
    x = _pool(5)
    e1, d1 = resolve_embedder(net, embed_fn=lambda imgs: imgs.mean((2, 3)))
    assert d1 == "user embed_fn"
    torch.testing.assert_close(embed_images(e1, x, network=net), x.mean((2, 3)))

    def two(n, imgs):
        assert n is net_inner
        return n.features(imgs)  # 4-D: flattened for us

    net_inner = net
    e2, d2 = resolve_embedder(nn.DataParallel(net), embed_fn=two)
    with torch.no_grad():
        expected = net.features(x).flatten(1)
    torch.testing.assert_close(embed_images(e2, x, network=net), expected)
    with pytest.raises(ValueError, match="embed_fn was given together with method='embed'"):
        resolve_embedder(net, embed_fn=two, method="embed")


def test_user_embed_fn_takes_precedence():
    net = DCNet()
    _, desc = resolve_embedder(net, embed_fn=lambda x: x.flatten(1))
    assert desc == "user embed_fn"


def test_embed_fn_returning_non_tensor():
    embedder, _ = resolve_embedder(DCNet(), embed_fn=lambda x: (x, x))
    with pytest.raises(TypeError, match="embed_fn returned tuple"):
        embed_images(embedder, _pool(3))


# --------------------------------------------------------------------- wrappers


def test_unwrap_data_parallel_resolves_inner_embed():
    net = DCNet().eval()
    wrapped = nn.DataParallel(nn.DataParallel(net))
    assert unwrap_network(wrapped) is net
    embedder, desc = resolve_embedder(wrapped)
    assert desc == "net.embed"
    x = _pool(4)
    with torch.no_grad():
        expected = net.embed(x)
    torch.testing.assert_close(embed_images(embedder, x, network=wrapped), expected)


def test_unwrap_compiled_module():
    net = MTTNet()
    compiled = torch.compile(net)  # lazy: nothing is compiled until called
    assert unwrap_network(compiled) is net
    assert resolve_embedder(compiled)[1] == "net.features + flatten"


def test_unwrap_plain_module_is_identity():
    net = MTTNet()
    assert unwrap_network(net) is net


def test_unwrap_ddp(tmp_path):
    dist = torch.distributed
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("gloo not available")
    if dist.is_initialized():
        pytest.skip("a process group already exists")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = DCNet()
        ddp = nn.parallel.DistributedDataParallel(net)
        assert unwrap_network(ddp) is net
        assert resolve_embedder(ddp)[1] == "net.embed"
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ side effects


@pytest.mark.parametrize("make", [DCNet, PlainConvNet])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("grad", [True, False])
def test_embedding_leaves_host_state_alone(make, mode, grad):
    net = _warm(make(dropout=0.5))
    net.train(mode == "train")
    list(net.parameters())[0].requires_grad_(False)
    pool = _pool(7)
    embedder, _ = resolve_embedder(net)
    with torch.set_grad_enabled(grad):
        before = state_fingerprint(net)
        feats = embed_images(embedder, pool, network=net, batch_size=3)
        assert_same_state(before, state_fingerprint(net))
        assert torch.is_grad_enabled() is grad
    assert not feats.requires_grad
    # with dropout active the pass did consume RNG: it was restored, not avoided
    if mode == "train":
        with torch.no_grad():
            bare = copy.deepcopy(net)
            s = torch.get_rng_state()
            bare.embed(pool) if make is DCNet else bare(pool)
            assert not torch.equal(s, torch.get_rng_state())


def test_embedding_restores_numpy_and_python_rng():
    net = DCNet().eval()

    def noisy(x):
        np.random.rand()
        random.random()
        return x.flatten(1) + torch.rand(1)

    embedder, _ = resolve_embedder(net, embed_fn=noisy)
    before = state_fingerprint(net)
    embed_images(embedder, _pool(4), network=net)
    assert_same_state(before, state_fingerprint(net))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pending_backward_survives_embedding(mode):
    net = _warm(DCNet(dropout=0.2))
    net.train(mode == "train")
    loss = net(_pool(4, seed=3)).sum()  # graph holds BN buffers (eval mode)
    embedder, _ = resolve_embedder(net)
    embed_images(embedder, _pool(9), network=net, batch_size=4)
    loss.backward()
    assert net.features[0].weight.grad is not None


def test_last_linear_hook_is_removed():
    net = PlainConvNet().eval()
    embedder, _ = resolve_embedder(net)
    embed_images(embedder, _pool(3), network=net)
    assert not net.head._forward_pre_hooks and not net.head._forward_hooks
    with pytest.raises(ValueError):
        embed_images(lambda x: embedder(x) * float("nan"), _pool(3), network=net)
    assert not net.head._forward_pre_hooks


def test_last_linear_not_called_is_an_error():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.spare = nn.Linear(2, 2)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    embedder, _ = resolve_embedder(Unused())
    with pytest.raises(RuntimeError, match="'spare' of Unused was not called"):
        embed_images(embedder, _pool(2))


# -------------------------------------------------------------------- chunking


def test_chunk_size_does_not_change_features():
    net = _warm(DCNet()).eval()
    embedder, _ = resolve_embedder(net)
    pool = _pool(11)
    a = embed_images(embedder, pool, network=net, batch_size=3)
    b = embed_images(embedder, pool, network=net, batch_size=100)
    torch.testing.assert_close(a, b)


def test_chunks_are_balanced_for_train_mode_batchnorm():
    # BatchNorm1d in train mode cannot take a chunk of one image: 5 images with
    # batch_size 4 are embedded as 3 + 2, not 4 + 1.
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    net.train()
    sizes = []
    embedder, _ = resolve_embedder(net)
    feats = embed_images(
        lambda x: (sizes.append(x.shape[0]), embedder(x))[1], _pool(5), network=net, batch_size=4
    )
    assert sizes == [3, 2]
    assert feats.shape == (5, 6)


def test_loader_callable_matches_tensor_form():
    net = _warm(MTTNet()).eval()
    embedder, _ = resolve_embedder(net)
    pool = _pool(10)
    calls = []

    def load(positions):
        assert positions.dtype == torch.long
        calls.append(positions.tolist())
        return pool[positions]

    a = embed_images(embedder, load, 10, network=net, batch_size=4)
    b = embed_images(embedder, pool, network=net)
    torch.testing.assert_close(a, b)
    assert sum(calls, []) == list(range(10))
    assert max(len(c) for c in calls) <= 4


def test_normalize_is_applied():
    net = _warm(DCNet()).eval()
    embedder, _ = resolve_embedder(net)
    raw = torch.rand(6, *IMG)  # IDC keeps [0, 1] images
    norm = lambda x: (x - 0.5) / 0.25  # noqa: E731
    a = embed_images(embedder, raw, network=net, normalize=norm)
    b = embed_images(embedder, norm(raw), network=net)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, embed_images(embedder, raw, network=net))


def test_dtype_and_device_follow_network():
    net = DCNet().double().eval()
    embedder, _ = resolve_embedder(net)
    seen = []
    feats = embed_images(
        lambda x: (seen.append(x.dtype), embedder(x))[1], _pool(3), network=net, device="cpu"
    )
    assert seen == [torch.float64]
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"


# ----------------------------------------------------------------------- errors


def test_errors():
    net = DCNet().eval()
    embedder, _ = resolve_embedder(net)
    with pytest.raises(ValueError, match="cannot embed an empty pool"):
        embed_images(embedder, torch.empty(0, *IMG), network=net)
    with pytest.raises(ValueError, match="cannot embed an empty pool"):
        embed_images(embedder, lambda p: _pool(1)[p], 0, network=net)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        embed_images(embedder, _pool(2), network=net, batch_size=0)
    with pytest.raises(TypeError, match="torch.uint8"):
        embed_images(embedder, torch.zeros(2, *IMG, dtype=torch.uint8), network=net)
    with pytest.raises(TypeError, match="needs n="):
        embed_images(embedder, lambda p: _pool(2)[p], network=net)
    with pytest.raises(ValueError, match="n=3 but the images tensor holds 2"):
        embed_images(embedder, _pool(2), 3, network=net)


def test_non_finite_embeddings_are_reported():
    net = DCNet().eval()
    embedder, _ = resolve_embedder(net)
    pool = _pool(6)
    pool[2, 0, 0, 0] = float("nan")
    pool[4] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"embeddings contain NaN/inf for 2 of 6 images; check the network and the image normalisation",
    ):
        embed_images(embedder, pool, network=net, batch_size=4)


def test_inconsistent_feature_size_is_reported():
    with pytest.raises(ValueError, match=r"feature size changed between chunks \(3 then 2"):
        embed_images(lambda x: torch.zeros(x.shape[0], x.shape[0]), _pool(5), batch_size=3)


def test_wrong_batch_dimension_is_reported():
    with pytest.raises(ValueError, match="returned shape"):
        embed_images(lambda x: x[:1].flatten(1), _pool(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_embedding_matches_cpu_and_keeps_state():
    net = _warm(DCNet(dropout=0.5))
    gpu = copy.deepcopy(net).cuda()
    pool = _pool(9)
    cpu_feats = embed_images(resolve_embedder(net.eval())[0], pool, network=net)
    gpu.eval()
    embedder, _ = resolve_embedder(gpu)
    before = state_fingerprint(gpu)
    feats = embed_images(embedder, pool, network=gpu, batch_size=4)  # CPU pool -> GPU
    assert feats.device.type == "cuda"
    assert_same_state(before, state_fingerprint(gpu))
    torch.testing.assert_close(feats.cpu(), cpu_feats, rtol=1e-4, atol=1e-4)
    gpu.train()
    loss = gpu(pool[:4].cuda()).sum()
    before = state_fingerprint(gpu)
    embed_images(embedder, pool.cuda(), network=gpu, batch_size=4)
    assert_same_state(before, state_fingerprint(gpu))
    loss.backward()
