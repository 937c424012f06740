"""Tiny labelled image sets with cluster structure inside every class."""

from __future__ import annotations

import torch


def clustered_images(classes: int = 3, per_class: int = 24, channels: int = 1, size: int = 8,
                     groups: int = 3, seed: int = 0, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` in shuffled order; each class holds ``groups`` tight groups.

    ``raw=True`` gives values in [0, 1] (like IDC's unnormalised images); otherwise roughly
    zero-mean values (like the normalised tensors of DC/DSA/DM/MTT).
    """
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(classes):
        centres = torch.randn(groups, channels, size, size, generator=g) * 2
        which = torch.arange(per_class) % groups
        x = centres[which] + 0.2 * torch.randn(per_class, channels, size, size, generator=g)
        xs.append(x)
        ys.append(torch.full((per_class,), c, dtype=torch.int64))
    x = torch.cat(xs)
    y = torch.cat(ys)
    order = torch.randperm(x.shape[0], generator=g)
    x, y = x[order], y[order]
    if raw:
        x = torch.sigmoid(x)
    return x.contiguous(), y


def class_index_lists(labels: torch.Tensor, classes: int) -> list[list[int]]:
    """Per-class lists of positions, the layout DC/DM/MTT keep next to their image tensor."""
    lists: list[list[int]] = [[] for _ in range(classes)]
    for i, lab in enumerate(labels.tolist()):
        lists[lab].append(i)
    return lists
