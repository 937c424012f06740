"""The gradient distances the hosts match with, in one place: DC/DSA's and IDC's.

* ``dc`` -- DC/DSA's layer-wise distance (:func:`match_loss`): per output unit, 1 - cosine between
  the two gradients; 1-D parameters (biases, normalisation) skipped. Scale-free: a batch whose
  gradient points the same way but is twice as large costs nothing more.
* ``l1`` / ``mse`` -- IDC's distance (:func:`idc_match_loss`): the sum of absolute or squared
  differences, convolution weights only by default. Scale-sensitive.

The dc loop always uses ``dc``; the idc loop uses ``idc.metric`` (any of :data:`GRADIENT_METRICS`);
``diagnose`` reports all three for the batches each strategy picks.
"""

from __future__ import annotations

from typing import Sequence

import torch

GRADIENT_METRICS = ("l1", "mse", "dc")
"""The per-layer gradient distances a matching step can minimise (``idc.metric``, ``diagnose --metric``)."""


def match_loss(gw_syn: Sequence[torch.Tensor], gw_real: Sequence[torch.Tensor]) -> torch.Tensor:
    """DC's layer-wise gradient distance: per output unit, 1 - cosine similarity; biases skipped."""
    total = gw_syn[0].new_zeros(())
    for gs, gr in zip(gw_syn, gw_real):
        if gs.dim() < 2:  # biases and normalisation parameters carry little signal; DC skips them
            continue
        a = gs.reshape(gs.shape[0], -1)
        b = gr.reshape(gr.shape[0], -1)
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def idc_match_loss(
    gw_syn: Sequence[torch.Tensor], gw_real: Sequence[torch.Tensor], metric: str = "l1",
    *, fc: bool = False, bias: bool = False,
) -> torch.Tensor:
    """The idc loop's gradient distance by ``metric``.

    ``l1`` / ``mse``: IDC's distance, per parameter tensor the sum of absolute or squared
    differences; 1-D tensors (biases, normalisation) and 2-D ones (the classifier) are skipped
    unless ``bias`` / ``fc`` ask for them, as in IDC's defaults. ``dc``: :func:`match_loss`, the very
    function the dc loop uses (``fc`` and ``bias`` do not apply: it always includes the classifier
    and skips 1-D tensors, as DC does).
    """
    if metric not in GRADIENT_METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, GRADIENT_METRICS))}, got {metric!r}")
    if metric == "dc":
        return match_loss(gw_syn, gw_real)
    total = gw_syn[0].new_zeros(())
    for gs, gr in zip(gw_syn, gw_real):
        if gs.dim() == 1 and not bias:
            continue
        if gs.dim() == 2 and not fc:
            continue
        diff = gs - gr
        total = total + (diff.abs().sum() if metric == "l1" else diff.pow(2).sum())
    return total
