"""``--method dm``: distribution matching (Zhao & Bilen, DM), written the way the host codebases write it.

A fresh randomly initialised network every iteration; per class, match the mean embedding of the
real batch and of the synthetic images. No options of its own; image lr 1.0, as DM uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dream_plugin.common.seeds import derive_seed
from dream_plugin.harness.ab.methods.base import LoopMethod, class_slice

if TYPE_CHECKING:
    from dream_plugin.harness.ab.loops import LoopContext


def dm_step(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx: LoopContext) -> float:
    """One DM iteration; returns the mean matching loss per class."""
    cfg = ctx.cfg
    net = ctx.make_net(derive_seed(ctx.seed, "dm-net", it))
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    ctx.live.net = net
    loss = syn.new_zeros(())
    for c in range(ctx.num_classes):
        real = ctx.aug(ctx.real(c, cfg.batch_real), it, c)
        fake = ctx.aug(syn[class_slice(c, cfg.ipc)], it, c)
        with torch.no_grad():
            mean_real = net.embed(real).mean(dim=0)
        mean_fake = net.embed(fake).mean(dim=0)
        loss = loss + (mean_real - mean_fake).pow(2).sum()
    opt_img.zero_grad(set_to_none=True)
    loss.backward()
    opt_img.step()
    return float(loss.detach()) / ctx.num_classes


DM = LoopMethod(name="dm", summary="distribution matching", step=dm_step, lr_img=1.0)
"""The dm loop method (registered in :mod:`dream_plugin.harness.ab.methods`)."""
