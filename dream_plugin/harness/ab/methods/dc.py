"""``--method dc``: gradient matching (Zhao et al., DC), written the way the host codebases write it.

A fresh network every iteration; ``outer_loop`` times: per class, match the gradients of the
classification loss on the real batch and on the synthetic images, update the synthetic set, then
train the network on the synthetic set for ``inner_loop`` epochs. Its options: :class:`DCConfig`
(``dc:`` in the config); image lr 0.1, the hosts' value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.common.errors import check_allowed
from dream_plugin.common.seeds import derive_seed
from dream_plugin.harness.ab.distances import match_loss
from dream_plugin.harness.ab.methods.base import Flag, LoopMethod, class_slice

if TYPE_CHECKING:
    from dream_plugin.harness.ab.loops import LoopContext


@dataclass(frozen=True)
class DCConfig:
    """Gradient matching (DC): per iteration a fresh network, ``outer_loop`` synthetic updates with
    ``inner_loop`` network epochs on the synthetic set between them."""

    outer_loop: int = 5
    inner_loop: int = 5
    lr_net: float = 0.01
    batch_train: int = 256


FLAGS: tuple[Flag, ...] = (
    ("--outer-loop", "dc.outer_loop", {"type": int, "help": "DC: synthetic updates per iteration"}),
    ("--inner-loop", "dc.inner_loop", {"type": int, "help": "DC: network epochs on the synthetic set between them"}),
    ("--lr-net", "dc.lr_net", {"type": float, "help": "DC: network learning rate in the inner loop"}),
    ("--batch-train", "dc.batch_train", {"type": int, "help": "DC: inner-loop batch size"}),
)


def check_dc(d: DCConfig) -> None:
    """Validate the ``dc`` section."""
    check_allowed(d.outer_loop >= 1, "dc.outer_loop (--outer-loop)", d.outer_loop, "an integer >= 1")
    check_allowed(d.inner_loop >= 0, "dc.inner_loop (--inner-loop)", d.inner_loop, "an integer >= 0")
    check_allowed(d.lr_net > 0, "dc.lr_net (--lr-net)", d.lr_net, "a number > 0")
    check_allowed(d.batch_train >= 1, "dc.batch_train (--batch-train)", d.batch_train, "an integer >= 1")


def _bn_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def dc_step(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx: LoopContext) -> float:
    """One DC iteration; returns the mean matching loss per class and outer step."""
    cfg = ctx.cfg
    net = ctx.make_net(derive_seed(ctx.seed, "dc-net", it))
    net.train()
    ctx.live.net = net
    params = [p for p in net.parameters() if p.requires_grad]
    opt_net = torch.optim.SGD(params, lr=cfg.dc.lr_net)
    bns = _bn_layers(net)
    total = 0.0
    for ol in range(cfg.dc.outer_loop):
        if bns:  # as DC: BatchNorm statistics from a real batch of every class, then frozen for matching
            with torch.no_grad():
                net.train()
                net(torch.cat([ctx.real(c, 16, "bn") for c in range(ctx.num_classes)]))
            for m in bns:
                m.eval()
        loss = syn.new_zeros(())
        for c in range(ctx.num_classes):
            real = ctx.aug(ctx.real(c, cfg.batch_real), it, ol, c)
            lab_real = torch.full((real.shape[0],), c, dtype=torch.long, device=ctx.device)
            sl = class_slice(c, cfg.ipc)
            fake = ctx.aug(syn[sl], it, ol, c)
            g_real = torch.autograd.grad(F.cross_entropy(net(real), lab_real), params)
            g_real = [g.detach() for g in g_real]
            g_fake = torch.autograd.grad(F.cross_entropy(net(fake), labels[sl]), params, create_graph=True)
            loss = loss + match_loss(g_fake, g_real)
        opt_img.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        total += float(loss.detach())
        if ol == cfg.dc.outer_loop - 1:
            break
        net.train()
        xs, ys = syn.detach().clone(), labels
        g = torch.Generator().manual_seed(derive_seed(ctx.seed, "dc-inner", it, ol))
        for il in range(cfg.dc.inner_loop):
            order = torch.randperm(xs.shape[0], generator=g).to(xs.device)
            for b, start in enumerate(range(0, xs.shape[0], cfg.dc.batch_train)):
                idx = order[start:start + cfg.dc.batch_train]
                xb = ctx.aug(xs[idx], "inner", it, ol, il, b)
                opt_net.zero_grad(set_to_none=True)
                F.cross_entropy(net(xb), ys[idx]).backward()
                opt_net.step()
    return total / (cfg.dc.outer_loop * ctx.num_classes)


DC = LoopMethod(name="dc", summary="gradient matching", step=dc_step, lr_img=0.1,
                section="dc", flags=FLAGS, check=check_dc)
"""The dc loop method (registered in :mod:`dream_plugin.harness.ab.methods`)."""
