"""Sums and counts of rows grouped by label, for one or a padded batch of problems.

The engine's Lloyd loop (:mod:`.lloyd`) forms its means this way. On the CPU the sums are one
sequential ``index_add_`` (deterministic and cheapest). On accelerators ``index_add_`` uses float
atomics whose order varies between runs, which would break "same seed, same result", so there the
sums are fixed-order one-hot products in row chunks.
"""

from __future__ import annotations

import torch

__all__ = ["count_by_label", "flat_bins", "sum_by_label"]


def flat_bins(labels: torch.Tensor, mask: torch.Tensor | None, k: int) -> torch.Tensor:
    """Bin ``b * k + label`` per row, flattened; padded rows go to the extra, discarded bin ``B * K``.

    The counts and the sums of one assignment share these bins (pass them as ``bins``).
    """
    b = labels.shape[0]
    flat = labels if b == 1 else labels + torch.arange(b, device=labels.device).unsqueeze(1) * k
    if mask is not None:
        flat = flat.masked_fill(~mask, b * k)
    return flat.reshape(-1)


def count_by_label(
    labels: torch.Tensor, mask: torch.Tensor | None, k: int, *, bins: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, K)`` number of real rows with each label; ``labels`` ``(B, N)``, ``mask`` real rows or None.

    ``bins``: :func:`flat_bins` of these labels, when the caller has them.
    """
    b = labels.shape[0]
    flat = bins if bins is not None else flat_bins(labels, mask, k)
    return torch.bincount(flat, minlength=b * k + 1)[: b * k].view(b, k)


def sum_by_label(
    m: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    k: int,
    *,
    one_hot: bool | None = None,
    rows: int = 4096,
    bins: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out[b, c]`` = sum of the rows ``m[b, i]`` with ``labels[b, i] == c`` (padded rows ignored): ``(B, K, M)``.

    ``one_hot``: force the accelerator path (None: by device); it works through ``rows``-row
    chunks so its ``(B, rows, K)`` one-hot matrix stays bounded. ``bins``: :func:`flat_bins` of
    these labels, when the caller has them.
    """
    b, n, width = m.shape
    if one_hot is None:
        one_hot = m.device.type != "cpu"
    if not one_hot:
        out = m.new_zeros((b * k + 1, width))
        out.index_add_(0, bins if bins is not None else flat_bins(labels, mask, k), m.reshape(-1, width))
        return out[: b * k].view(b, k, width)
    sums = m.new_zeros((b, k, width))
    ids = torch.arange(k, device=m.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        onehot = labels[:, s:e].unsqueeze(2) == ids
        if mask is not None:
            onehot &= mask[:, s:e].unsqueeze(2)
        sums.baddbmm_(onehot.to(m.dtype).transpose(1, 2), m[:, s:e])
    return sums
