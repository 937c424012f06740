"""Keep the host's training state untouched while DREAM embeds real images.

Selecting representative real images runs the host's *live* network on a pool
of images. That must be invisible to the host: afterwards its parameters,
buffers, train/eval modes, ``requires_grad`` flags, global grad mode and every
random generator (torch CPU, each CUDA device, numpy-global, python
``random``) must be exactly what they were.

The central design rule: **never write into the host's tensors**, not even to
"restore" them to identical values. An in-place write bumps the tensor's
autograd version counter, and an eval-mode BatchNorm saves its running
buffers for backward; a host that computed ``loss = net(x)`` *before* our
selection and calls ``loss.backward()`` *after* it then fails with "one of the
variables needed for gradient computation has been modified by an inplace
operation". So instead of snapshot-and-restore of tensors we prevent writes:

* everything runs under :func:`torch.no_grad` (restores the grad mode itself);
* every ``_BatchNorm`` (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, lazy
  variants) with ``track_running_stats=True`` gets the *Python attribute*
  ``track_running_stats`` set to ``False`` for the duration. In
  ``_BatchNorm.forward`` (torch 2.x) a train-mode module then skips
  ``num_batches_tracked.add_(1)`` and passes ``None`` as running mean/var to
  ``F.batch_norm``, i.e. it normalises with batch statistics (exactly as it
  would in train mode) and writes nothing; this also holds for
  ``momentum=None`` (the cumulative-average branch is inside the same
  ``if``). For an eval-mode module the flag changes nothing at all (it reads
  its buffers either way), so it is applied to every tracked BatchNorm: that
  also protects the buffers if a badly-behaved embed function flips a module
  into train mode;
* every ``_InstanceNorm`` in train mode with ``track_running_stats=True``
  (rare) would update its running buffers whatever the flag says
  (``F.instance_norm`` always receives them), so for the duration its
  running buffers are *rebound* to ``None`` and the very same tensor objects
  are bound back afterwards (no tensor is written);
* train/eval modes and ``requires_grad`` flags are Python attributes: if an
  embed function changes them they are put back (with a warning);
* random generator states are snapshotted and restored (generator state is not
  part of any autograd graph).

:func:`module_flags` and :func:`tensor_versions` are what the guard compares; the tests'
``host_state_check`` captures and compares all of the above with them.
"""

from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = [
    "RNGSnapshot",
    "snapshot_rng",
    "restore_rng",
    "preserved_rng",
    "frozen_batchnorm_stats",
    "no_side_effects",
    "module_flags",
    "tensor_versions",
]


# --------------------------------------------------------------------------- RNG


@dataclass
class RNGSnapshot:
    """States of every global random generator the host may rely on."""

    torch_cpu: torch.Tensor
    #: one state per CUDA device; ``None`` when CUDA was not initialised at
    #: snapshot time (then CUDA generators are left alone on restore).
    torch_cuda: list[torch.Tensor] | None
    numpy: tuple[Any, ...]
    python: tuple[Any, ...]
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)


def snapshot_rng() -> RNGSnapshot:
    """Capture torch CPU, every CUDA device (if CUDA is initialised),
    numpy-global and python ``random`` states."""
    cuda_states = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return RNGSnapshot(
        torch_cpu=torch.get_rng_state().clone(),
        torch_cuda=cuda_states,
        numpy=np.random.get_state(),
        python=random.getstate(),
    )


def restore_rng(s: RNGSnapshot) -> None:
    """Put every generator captured in ``s`` back into that state."""
    torch.set_rng_state(s.torch_cpu)
    if s.torch_cuda is not None:
        torch.cuda.set_rng_state_all(s.torch_cuda)
    np.random.set_state(s.numpy)
    random.setstate(s.python)


@contextmanager
def preserved_rng() -> Iterator[RNGSnapshot]:
    """Snapshot all generators, yield, restore them (also on exception)."""
    snap = snapshot_rng()
    try:
        yield snap
    finally:
        restore_rng(snap)


# ----------------------------------------------------------------- norm buffers


@contextmanager
def frozen_batchnorm_stats(module: nn.Module | None) -> Iterator[None]:
    """Make every norm layer in ``module`` leave its running statistics alone.

    Only Python attributes are changed, and they are restored in ``finally``:
    ``track_running_stats`` of each tracked ``_BatchNorm`` (incl.
    ``SyncBatchNorm``) is set to ``False`` (train mode: batch statistics, no
    buffer passed, ``num_batches_tracked`` not incremented; eval mode: no
    change in behaviour), and the running buffers of each train-mode tracked
    ``_InstanceNorm`` are rebound to ``None``. Train/eval modes are *not*
    changed: the network embeds exactly as the host runs it.
    """
    if module is None:
        yield
        return
    flipped: list[_BatchNorm] = []
    unbound: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []
    try:
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                if m.track_running_stats:
                    m.track_running_stats = False
                    flipped.append(m)
            elif isinstance(m, _InstanceNorm):
                if m.training and m.track_running_stats:
                    saved = {}
                    for name in ("running_mean", "running_var"):
                        buf = m._buffers.get(name)
                        if buf is not None:
                            saved[name] = buf
                            m._buffers[name] = None
                    if saved:
                        unbound.append((m, saved))
        yield
    finally:
        for m in flipped:
            m.track_running_stats = True
        for m, saved in unbound:
            for name, buf in saved.items():
                m._buffers[name] = buf  # the same tensor object: nothing written


# ------------------------------------------------------------------ whole guard


def module_flags(module: nn.Module) -> tuple[dict[str, bool], dict[str, bool]]:
    """Train/eval mode of every submodule and ``requires_grad`` of every parameter, by name."""
    training = {name: m.training for name, m in module.named_modules()}
    requires_grad = {name: p.requires_grad for name, p in module.named_parameters()}
    return training, requires_grad


def tensor_versions(module: nn.Module) -> dict[str, tuple[str, int]]:
    """Autograd version counters (bumped by every in-place write)."""
    out: dict[str, tuple[str, int]] = {}
    for kind, items in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in items:
            try:
                out[name] = (kind, t._version)
            except RuntimeError:  # inference tensors have no version counter
                pass
    return out


@contextmanager
def no_side_effects(module: nn.Module | None) -> Iterator[None]:
    """Run a block (an embedding pass) without changing the host's state.

    Combines :func:`torch.no_grad` (the previous grad mode comes back by
    itself), :func:`preserved_rng` and :func:`frozen_batchnorm_stats`. It also
    records each submodule's ``training`` flag and each parameter's
    ``requires_grad`` flag and, if the block changed them, restores the flags
    (Python attributes, so restoring is safe) and warns. Tensors are never
    restored in place (see the module docstring); if the block nevertheless
    wrote into a parameter or buffer in place (e.g. a spectral-norm power
    iteration in train mode), a ``RuntimeWarning`` names it.
    """
    if module is not None:
        training, requires_grad = module_flags(module)
        versions = tensor_versions(module)
    try:
        with torch.no_grad(), preserved_rng(), frozen_batchnorm_stats(module):
            yield
    finally:
        if module is not None:
            changed = []
            for name, m in module.named_modules():
                if name in training and m.training != training[name]:
                    m.training = training[name]
                    changed.append(f"mode of {name or '<root>'!r}")
            for name, p in module.named_parameters():
                if name in requires_grad and p.requires_grad != requires_grad[name]:
                    p.requires_grad_(requires_grad[name])
                    changed.append(f"requires_grad of {name!r}")
            if changed:
                warnings.warn(
                    "the embedding pass changed " + ", ".join(changed)
                    + "; the flags were restored",
                    RuntimeWarning,
                    stacklevel=3,
                )
            written = [
                f"{kind} {name!r}"
                for name, (kind, v) in tensor_versions(module).items()
                if name in versions and versions[name][1] != v
            ]
            if written:
                warnings.warn(
                    "the embedding pass wrote in place into " + ", ".join(written)
                    + " of the host network (not restored: restoring in place would "
                    "break the host's pending backward); check the embed function",
                    RuntimeWarning,
                    stacklevel=3,
                )
