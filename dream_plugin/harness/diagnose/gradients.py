"""Per-sample gradients of the classification loss, and how a batch's mean gradient compares with
the whole pool's.

The network is evaluated in eval mode (normalisation layers use running statistics), so a batch's
gradient is exactly the mean of its samples' gradients: one pass of per-sample gradients over a
class pool then answers every batch of that class, the many random draws included.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.harness.ab.distances import GRADIENT_METRICS, idc_match_loss, match_loss


def per_sample_gradients(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, torch.Size]]]:
    """Per-sample loss and flattened loss gradient with respect to every trainable parameter.

    Returns ``(losses (N,), grads (N, P), layout)``; ``layout`` lists (parameter name, shape) in
    the order of the flattened columns. The network's parameters, buffers, ``.grad`` fields and
    train/eval mode are left as they were.
    """
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    layout = [(n, params[n].shape) for n in names]

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    def both(p, xi, yi):
        g = grad(loss_of)(p, xi, yi)
        return loss_of(p, xi, yi), torch.cat([g[n].reshape(-1) for n in names])

    was_training = net.training
    net.eval()
    try:
        losses, grads = [], []
        with torch.enable_grad():
            for start in range(0, x.shape[0], chunk):
                lo, gr = vmap(both, in_dims=(None, 0, 0))(params, x[start:start + chunk], y[start:start + chunk])
                losses.append(lo.detach())
                grads.append(gr.detach())
    finally:
        net.train(was_training)
    return torch.cat(losses), torch.cat(grads), layout


def split_layers(flat: torch.Tensor, layout: Sequence[tuple[str, torch.Size]]) -> list[torch.Tensor]:
    """The flattened gradient back as one tensor per parameter."""
    out, start = [], 0
    for _, shape in layout:
        size = int(torch.Size(shape).numel())
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def dc_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """DC's layer-wise distance, as the dc loop matches (:func:`~dream_plugin.harness.ab.loops.match_loss`)."""
    return float(match_loss(a, b))


def idc_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], metric: str = "l1") -> float:
    """The idc loop's layer-wise distance by ``metric`` (:func:`~dream_plugin.harness.ab.distances.idc_match_loss`)."""
    return float(idc_match_loss(a, b, metric))


def batch_gradient_stats(
    grads: torch.Tensor, positions: torch.Tensor, layout: Sequence[tuple[str, torch.Size]], *,
    full: torch.Tensor | None = None, metric: str = "l1",
) -> dict[str, float]:
    """Compare the mean gradient of the rows ``positions`` of ``grads`` with the mean of all rows.

    ``cosine``: of the flattened gradients; ``rel_error``: ||g_batch - g_pool|| / ||g_pool||;
    ``dc_distance`` / ``l1_distance`` / ``mse_distance``: the matching distances the loops would see
    between them (:data:`~dream_plugin.harness.ab.distances.GRADIENT_METRICS`); ``distance``: the one named by
    ``metric``; ``batch_norm`` / ``pool_norm``: the two gradients' norms.
    """
    g_pool = grads.mean(0) if full is None else full
    g_batch = grads[positions].mean(0)
    pool_norm = float(g_pool.norm())
    batch_norm = float(g_batch.norm())
    cosine = float(g_batch @ g_pool) / max(pool_norm * batch_norm, 1e-30)
    rel = float((g_batch - g_pool).norm()) / max(pool_norm, 1e-30)
    lb, lp = split_layers(g_batch, layout), split_layers(g_pool, layout)
    dist = {f"{m}_distance": idc_distance(lb, lp, m) for m in GRADIENT_METRICS}
    return {"cosine": cosine, "rel_error": rel, **dist, "distance": dist[f"{metric}_distance"],
            "batch_norm": batch_norm, "pool_norm": pool_norm}
