"""An MTT-like host: initialisation from ``get_images(c, ipc)`` with no network in existence, and
expert training by iterating a shuffled loader over the whole training set."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .data import class_index_lists, clustered_images


def run_mtt_like_init(user_line: Callable[..., Any] | None = None, *, ipc: int = 3, classes: int = 3,
                      per_class: int = 24, seed: int = 0) -> tuple[torch.Tensor, Any]:
    """Return the initialised synthetic images (and the adapter, if any)."""
    np.random.seed(seed)
    images, labels = clustered_images(classes, per_class, seed=seed)
    indices_class = class_index_lists(labels, classes)

    def get_images(c: int, n: int) -> torch.Tensor:
        members = np.asarray(indices_class[c])
        return images[members[np.random.permutation(len(members))[:n]]]

    adapter = None
    if user_line is not None:
        adapter = get_images = user_line(get_images=get_images, images_all=images, indices_class=indices_class)
    syn = torch.randn(classes * ipc, *images.shape[1:])
    for c in range(classes):
        syn[c * ipc:(c + 1) * ipc] = get_images(c, ipc).detach()
    return syn, adapter


def train_expert(net: nn.Module, batches: Any, epochs: int = 1) -> int:
    """Consume ``batches`` only by iterating it, as the expert-training loop does; return #batches."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    seen = 0
    for _ in range(epochs):
        for img, lab in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(net(img), lab).backward()
            opt.step()
            seen += 1
    return seen
