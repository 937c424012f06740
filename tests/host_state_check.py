"""Test helpers: capture everything :func:`dream_plugin.engine.host_state.no_side_effects` promises to keep,
and compare two captures naming every difference (e.g. ``buffer 'bn.running_mean' changed``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from dream_plugin.engine.host_state import RNGSnapshot, module_flags, snapshot_rng, tensor_versions

__all__ = ["assert_same_state", "state_fingerprint"]


def state_fingerprint(module: nn.Module | None) -> dict[str, Any]:
    """Everything :func:`no_side_effects` promises to keep, captured for
    comparison with :func:`assert_same_state`. Tensors are cloned (detached)."""
    fp: dict[str, Any] = {
        "grad_enabled": torch.is_grad_enabled(),
        "rng": snapshot_rng(),
    }
    if module is not None:
        with torch.no_grad():
            fp["parameters"] = {n: p.detach().clone() for n, p in module.named_parameters()}
            fp["buffers"] = {n: b.detach().clone() for n, b in module.named_buffers()}
        fp["versions"] = tensor_versions(module)
        fp["training"], fp["requires_grad"] = module_flags(module)
        fp["track_running_stats"] = {
            n: m.track_running_stats
            for n, m in module.named_modules()
            if isinstance(m, (_BatchNorm, _InstanceNorm))
        }
    return fp


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return torch.equal(a, b)


def _rng_differences(a: RNGSnapshot, b: RNGSnapshot) -> list[str]:
    diffs = []
    if not torch.equal(a.torch_cpu, b.torch_cpu):
        diffs.append("torch CPU RNG state changed")
    if a.torch_cuda is not None and b.torch_cuda is not None:
        if len(a.torch_cuda) != len(b.torch_cuda):
            diffs.append("number of CUDA RNG states changed")
        else:
            for i, (x, y) in enumerate(zip(a.torch_cuda, b.torch_cuda)):
                if not torch.equal(x, y):
                    diffs.append(f"CUDA device {i} RNG state changed")
    elif (a.torch_cuda is None) != (b.torch_cuda is None):
        diffs.append("CUDA was initialised in between (CUDA RNG states not comparable)")
    na, nb = a.numpy, b.numpy
    if len(na) != len(nb) or any(
        not np.array_equal(x, y) if isinstance(x, np.ndarray) else x != y
        for x, y in zip(na, nb)
    ):
        diffs.append("numpy global RNG state changed")
    if a.python != b.python:
        diffs.append("python random state changed")
    return diffs


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Raise ``AssertionError`` listing everything that differs between two
    :func:`state_fingerprint` results (e.g. ``buffer 'bn.running_mean'
    changed``)."""
    diffs: list[str] = []
    if before["grad_enabled"] != after["grad_enabled"]:
        diffs.append(
            f"grad mode changed ({before['grad_enabled']} -> {after['grad_enabled']})"
        )
    diffs += _rng_differences(before["rng"], after["rng"])
    if ("parameters" in before) != ("parameters" in after):
        diffs.append("one fingerprint has a module and the other has not")
    elif "parameters" in before:
        for kind, key in (("parameter", "parameters"), ("buffer", "buffers")):
            b, a = before[key], after[key]
            for name in sorted(b.keys() - a.keys()):
                diffs.append(f"{kind} {name!r} disappeared")
            for name in sorted(a.keys() - b.keys()):
                diffs.append(f"{kind} {name!r} appeared")
            for name in [n for n in b if n in a]:
                if not _same_tensor(b[name], a[name]):
                    diffs.append(f"{kind} {name!r} changed")
        for name, (kind, v) in before["versions"].items():
            if name in after["versions"] and after["versions"][name][1] != v:
                diffs.append(
                    f"{kind} {name!r} was written in place "
                    f"(version {v} -> {after['versions'][name][1]})"
                )
        for label, key in (
            ("train/eval mode", "training"),
            ("requires_grad", "requires_grad"),
            ("track_running_stats", "track_running_stats"),
        ):
            b, a = before[key], after[key]
            for name in sorted(b.keys() | a.keys()):
                if b.get(name) != a.get(name):
                    diffs.append(
                        f"{label} of {name or '<root>'!r} changed "
                        f"({b.get(name)} -> {a.get(name)})"
                    )
    if diffs:
        raise AssertionError("host state changed: " + "; ".join(diffs))
