"""Tests for dream_plugin.engine.host_state: nothing the host owns may change."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dream_plugin.engine.host_state import (
    RNGSnapshot,
    frozen_batchnorm_stats,
    no_side_effects,
    preserved_rng,
    restore_rng,
    snapshot_rng,
)
from host_state_check import assert_same_state, state_fingerprint


class TinyBN(nn.Module):
    def __init__(self, momentum: float | None = 0.1, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=momentum)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(x.flatten(1)))


def _draw_all():
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
    )


def _consume_all():
    torch.rand(5)
    torch.randn(2, 2)
    np.random.rand(4)
    random.random()


def _warmed_net(**kw) -> TinyBN:
    """A net whose BN buffers hold non-default values."""
    net = TinyBN(**kw)
    net.train()
    with torch.no_grad():
        net(torch.randn(6, 3, 8, 8) * 2 + 1)
    return net


# ------------------------------------------------------------------------ RNG


def test_snapshot_restore_roundtrip():
    snap = snapshot_rng()
    assert isinstance(snap, RNGSnapshot)
    first = _draw_all()
    _consume_all()
    restore_rng(snap)
    assert _draw_all() == first


def test_preserved_rng_restores_on_exception():
    snap = snapshot_rng()
    expected = _draw_all()
    restore_rng(snap)
    with pytest.raises(KeyError):
        with preserved_rng():
            _consume_all()
            raise KeyError("boom")
    assert _draw_all() == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["torch", "numpy", "python", "normal"]), max_size=8))
def test_preserved_rng_any_consumption_pattern(ops):
    before = snapshot_rng()
    with preserved_rng():
        for op in ops:
            if op == "torch":
                torch.randint(0, 10, (3,))
            elif op == "numpy":
                np.random.randint(0, 10, 3)
            elif op == "python":
                random.randrange(10)
            else:
                torch.empty(4).normal_()
    assert_same_state({"grad_enabled": torch.is_grad_enabled(), "rng": before}, state_fingerprint(None))


# -------------------------------------------------------------- BatchNorm flag


@pytest.mark.parametrize("momentum", [0.1, None])
def test_frozen_batchnorm_train_mode_uses_batch_stats_and_writes_nothing(momentum):
    net = _warmed_net(momentum=momentum)
    bn = net.bn
    x = torch.randn(5, 4, 6, 6)
    before = state_fingerprint(net)
    with torch.no_grad(), frozen_batchnorm_stats(net):
        assert bn.track_running_stats is False
        out = bn(x)
    assert bn.track_running_stats is True
    assert_same_state(before, state_fingerprint(net))
    with torch.no_grad():
        expected = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(out, expected)


def test_frozen_batchnorm_eval_mode_output_unchanged():
    net = _warmed_net().eval()
    x = torch.randn(5, 4, 6, 6)
    with torch.no_grad():
        reference = net.bn(x)
        with frozen_batchnorm_stats(net):
            out = net.bn(x)
    torch.testing.assert_close(out, reference)  # still the running statistics


def test_frozen_batchnorm_restores_attribute_on_exception():
    net = _warmed_net()
    with pytest.raises(RuntimeError):
        with frozen_batchnorm_stats(net):
            raise RuntimeError("x")
    assert net.bn.track_running_stats is True


def test_frozen_batchnorm_leaves_untracked_bn_untracked():
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    with frozen_batchnorm_stats(bn):
        assert bn.track_running_stats is False
    assert bn.track_running_stats is False


def test_frozen_batchnorm_syncbatchnorm_and_bn1d():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 3), nn.SyncBatchNorm(3))
    net.train()
    before = state_fingerprint(net)
    with no_side_effects(net):
        net(torch.randn(7, 4))
    assert_same_state(before, state_fingerprint(net))
    # sanity: without the guard the buffers do move
    with torch.no_grad():
        net(torch.randn(7, 4))
    with pytest.raises(AssertionError, match="buffer '1.running_mean' changed"):
        assert_same_state(before, state_fingerprint(net))


def test_frozen_batchnorm_instancenorm_with_running_stats():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.InstanceNorm2d(2, track_running_stats=True))
    net.train()
    x = torch.randn(3, 3, 5, 5)
    before = state_fingerprint(net)
    buf = net[1].running_mean
    with no_side_effects(net):
        out = net(x)
    assert net[1].running_mean is buf  # the same tensor object is bound back
    assert_same_state(before, state_fingerprint(net))
    with torch.no_grad():
        expected = F.instance_norm(net[0](x))
    torch.testing.assert_close(out, expected)


# ------------------------------------------------------------- no_side_effects


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("grad", [True, False])
def test_no_side_effects_forward_keeps_everything(mode, grad):
    net = _warmed_net(dropout=0.5)
    net.train(mode == "train")
    net.fc.weight.requires_grad_(False)  # a mixed requires_grad pattern must survive
    with torch.set_grad_enabled(grad):
        before = state_fingerprint(net)
        with no_side_effects(net):
            assert not torch.is_grad_enabled()
            out = net(torch.randn(4, 3, 8, 8))
            np.random.rand()
            random.random()
        assert not out.requires_grad
        assert_same_state(before, state_fingerprint(net))
        assert torch.is_grad_enabled() is grad


def test_no_side_effects_restores_flags_changed_by_bad_code():
    net = _warmed_net().eval()
    before = state_fingerprint(net)
    with pytest.warns(RuntimeWarning, match="mode of"):
        with no_side_effects(net):
            net.train()
            net.conv.weight.requires_grad_(False)
            torch.set_grad_enabled(True)
            net(torch.randn(4, 3, 8, 8))  # train-mode forward: BN must still not write
    assert_same_state(before, state_fingerprint(net))


def test_no_side_effects_warns_about_in_place_writes():
    net = _warmed_net()
    with pytest.warns(RuntimeWarning, match="wrote in place into buffer 'bn.running_mean'"):
        with no_side_effects(net):
            net.bn.running_mean.add_(0.0)


def test_no_side_effects_restores_on_exception():
    net = _warmed_net(dropout=0.5)
    before = state_fingerprint(net)
    with pytest.raises(ValueError):
        with no_side_effects(net):
            net(torch.randn(4, 3, 8, 8))
            raise ValueError("embedding failed")
    assert_same_state(before, state_fingerprint(net))


def test_no_side_effects_none_module():
    before = state_fingerprint(None)
    with no_side_effects(None):
        _consume_all()
    assert_same_state(before, state_fingerprint(None))


# --------------------------------------------------------------- the BN trap


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_in_place_restore_would_break_pending_backward(mode):
    """Documents why buffers are never restored in place: a pending backward
    through a BatchNorm (eval mode, and in fact train mode too) fails after
    ``buf.copy_(buf.clone())`` although the values are identical."""
    net = _warmed_net()
    net.train(mode == "train")
    loss = net(torch.randn(4, 3, 8, 8)).sum()
    for buf in (net.bn.running_mean, net.bn.running_var):
        with torch.no_grad():
            buf.copy_(buf.clone())
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_in_place_restore_is_caught_by_fingerprint():
    net = _warmed_net()
    before = state_fingerprint(net)
    with torch.no_grad():
        net.bn.running_var.copy_(net.bn.running_var.clone())
    with pytest.raises(AssertionError, match=r"buffer 'bn.running_var' was written in place"):
        assert_same_state(before, state_fingerprint(net))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pending_backward_survives_guarded_forward(mode):
    net = _warmed_net(dropout=0.3)
    net.train(mode == "train")
    loss = net(torch.randn(4, 3, 8, 8)).sum()
    with no_side_effects(net):
        net(torch.randn(9, 3, 8, 8))
    loss.backward()
    assert net.conv.weight.grad is not None


# -------------------------------------------------------- assert_same_state


def test_assert_same_state_names_what_differs():
    net = _warmed_net()
    before = state_fingerprint(net)
    assert_same_state(before, state_fingerprint(net))

    net.bn.running_mean = net.bn.running_mean + 1  # rebinding: values differ
    net.fc.bias = nn.Parameter(net.fc.bias.detach() + 1)
    net.bn.eval()
    net.conv.weight.requires_grad_(False)
    torch.rand(1)
    with torch.no_grad():
        after = state_fingerprint(net)
    with pytest.raises(AssertionError) as info:
        assert_same_state(before, after)
    msg = str(info.value)
    for part in (
        "buffer 'bn.running_mean' changed",
        "parameter 'fc.bias' changed",
        "train/eval mode of 'bn' changed (True -> False)",
        "requires_grad of 'conv.weight' changed",
        "grad mode changed",
        "torch CPU RNG state changed",
    ):
        assert part in msg, (part, msg)


def test_assert_same_state_numpy_and_python_rng():
    before = state_fingerprint(None)
    np.random.rand()
    random.random()
    with pytest.raises(AssertionError) as info:
        assert_same_state(before, state_fingerprint(None))
    assert "numpy global RNG state changed" in str(info.value)
    assert "python random state changed" in str(info.value)


def test_nan_buffers_compare_equal():
    bn = nn.BatchNorm1d(2)
    bn.running_mean = torch.tensor([float("nan"), 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_state(state_fingerprint(bn), state_fingerprint(bn))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_buffers_and_pending_backward():
    torch.cuda.init()
    net = _warmed_net(dropout=0.5).cuda()
    loss = net(torch.randn(4, 3, 8, 8, device="cuda")).sum()
    before = state_fingerprint(net)
    assert before["rng"].torch_cuda is not None
    with no_side_effects(net):
        net(torch.randn(4, 3, 8, 8, device="cuda"))  # dropout consumes CUDA RNG
        torch.rand(3, device="cuda")
    assert_same_state(before, state_fingerprint(net))
    loss.backward()
