"""A DC/DSA-like and a DM-like host loop around a ``get_images(c, n)`` closure.

Contract recreated (see docs/hosts/dc-dsa.md and dm.md):

* all training images live in one normalised tensor; a list holds each class's positions in it;
* ``get_images(c, n)`` is a closure defined inside the per-experiment loop that draws n positions
  of class c with numpy's global generator and returns those rows;
* it is called for 'real' initialisation (once per class per experiment, n = ipc, before the
  experiment has built any network), for the matching batch of every class in every outer loop
  (n = batch_real) and, with a BatchNorm network, for a 16-image-per-class batch that only sets
  the BN statistics (DC/DSA);
* the network is rebuilt (by a constructor that reseeds torch) at every training iteration.

``user_line`` stands for the one line the user adds right after the closure is defined: it gets
the host's local objects and returns the replacement for ``get_images`` (None: unmodified host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .data import class_index_lists, clustered_images
from .nets import host_constructor

BN_BATCH = 16


@dataclass
class Trace:
    """What the sampler handed the host, in call order: (kind as the host meant it, class, images)."""

    calls: list[tuple[str, int, torch.Tensor]] = field(default_factory=list)
    numpy_after: Any = None
    torch_after: torch.Tensor | None = None
    adapters: list[Any] = field(default_factory=list)


def run_dc_like(
    user_line: Callable[..., Any] | None = None,
    *,
    model: str = "conv",
    bn: bool = False,
    dataparallel: bool = False,
    num_exp: int = 2,
    iterations: int = 2,
    outer_loop: int = 2,
    ipc: int = 2,
    batch_real: int = 8,
    classes: int = 3,
    per_class: int = 24,
    seed: int = 0,
    dm: bool = False,
) -> Trace:
    """Run the fake DC (``dm=False``) or DM (``dm=True``) loop; return what get_images returned."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    trace = Trace()
    images, labels = clustered_images(classes, per_class, seed=seed)

    def build() -> nn.Module:
        return host_constructor(model, classes=classes, bn=bn, dataparallel=dataparallel)

    for _exp in range(num_exp):
        images_all = images.clone()
        indices_class = class_index_lists(labels, classes)

        def get_images(c: int, n: int) -> torch.Tensor:
            members = np.asarray(indices_class[c])
            chosen = members[np.random.permutation(len(members))[:n]]
            return images_all[chosen]

        if user_line is not None:
            adapter = user_line(
                get_images=get_images, images_all=images_all, indices_class=indices_class,
                live_net=lambda: net, factory=build, ipc=ipc, bn_n=BN_BATCH, batch_real=batch_real,
            )
            trace.adapters.append(adapter)
            get_images = adapter

        syn = torch.randn(classes * ipc, *images.shape[1:])
        for c in range(classes):
            got = get_images(c, ipc)
            trace.calls.append(("init", c, got))
            syn[c * ipc:(c + 1) * ipc] = got.detach()
        syn.requires_grad_(True)

        for _it in range(iterations):
            net = build()
            net.train()
            if dm:
                for p in net.parameters():
                    p.requires_grad = False
            for _ol in range(outer_loop):
                if bn and not dm:
                    batch = []
                    for c in range(classes):
                        got = get_images(c, BN_BATCH)
                        trace.calls.append(("bn", c, got))
                        batch.append(got)
                    net(torch.cat(batch))
                    for m in net.modules():
                        if isinstance(m, nn.BatchNorm2d):
                            m.eval()
                loss = torch.zeros(())
                for c in range(classes):
                    real = get_images(c, batch_real)
                    trace.calls.append(("match", c, real))
                    # the caller relies on exactly batch_real rows
                    assert real.shape[0] == batch_real
                    fake = syn[c * ipc:(c + 1) * ipc]
                    if dm:
                        inner = net.module if isinstance(net, nn.DataParallel) else net
                        loss = loss + ((inner.embed(real).mean(0) - inner.embed(fake).mean(0)) ** 2).sum()
                    else:
                        target = torch.full((ipc,), c, dtype=torch.int64)
                        loss = loss + nn.functional.cross_entropy(net(fake), target) \
                            + nn.functional.cross_entropy(net(real), torch.full((batch_real,), c)).detach()
                loss.backward()
                with torch.no_grad():
                    syn -= 0.1 * syn.grad
                    syn.grad = None
    trace.numpy_after = np.random.get_state()[1].copy()
    trace.torch_after = torch.get_rng_state().clone()
    return trace
