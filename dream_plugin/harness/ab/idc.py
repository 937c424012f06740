"""The IDC-style reference loop (Kim et al., ICML 2022), as the official DREAM code runs it.

One call of :func:`idc_round` is one outer iteration:

* a fresh, seeded matching network every ``idc.fix_iter`` outer iterations (optionally trained on
  ``idc.pretrain`` random real samples first), kept with its SGD state in between;
* the synthetic set is clamped to the valid pixel range, and the inner-step counter restarts, so
  DREAM clusters the current network afresh at the first matching call of the round;
* ``idc.inner_loop`` inner steps; in each, per class: the real batch comes through the sampler's
  ``.match`` (the only place where arms differ), the class's stored images are decoded by
  multi-formation (:func:`~dream_plugin.harness.mosaic.unmosaic`), the same augmentation is applied to
  both, and one SGD step on the stored pixels minimises the per-layer gradient distance
  ``idc.metric`` (IDC's l1 or mse, or DC's scale-free dc; :mod:`dream_plugin.harness.ab.distances`);
* after each inner step the network trains on ``idc.n_data`` random real samples that never go
  through the selection, drawn from explicit seeds, so they are the same in every arm (and can be
  shared between runs through ``cache``, :mod:`dream_plugin.harness.ab.cache`).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.harness.mosaic import unmosaic
from dream_plugin.core.selector import derive_seed
from dream_plugin.harness.ab.distances import idc_match_loss


def decode_class(stored: torch.Tensor, factor: int) -> torch.Tensor:
    """The ipc * factor**2 training images that one class's ``stored`` images decode into."""
    return unmosaic(stored, factor)


def decode_synset(syn: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole decoded training set: every stored image gives factor**2 images of its label."""
    if factor == 1:
        return syn, labels
    return unmosaic(syn, factor), labels.repeat(factor * factor)


def real_batch_indices(seed: int, samples: int, total: int, batch: int, *parts: object) -> list[torch.Tensor]:
    """Indices of the random real batches for one network update: ``samples`` draws in batches of
    ``batch`` from a fresh permutation of the ``total`` training images (more when samples > total).

    A function of its arguments only (a generator seeded by (seed, parts)), never of the selection or
    of a global generator: every arm trains its matching network on the same images.
    """
    if samples <= 0:
        return []
    g = torch.Generator().manual_seed(derive_seed(seed, "idc-real", *parts))
    order = torch.cat([torch.randperm(total, generator=g) for _ in range(math.ceil(samples / total))])
    return [order[start:min(start + batch, samples)] for start in range(0, samples, batch)]


def train_on_real(net: nn.Module, opt: torch.optim.Optimizer, samples: int, ctx, *parts: object) -> None:
    """SGD on :func:`real_batch_indices` batches (``idc.batch_net``) until ``samples`` samples were seen.

    With ``ctx.network_cache`` the resulting network and optimiser state is loaded when an earlier run
    saved it (the trajectory is the same in every arm, see :mod:`dream_plugin.harness.ab.cache`), and
    saved otherwise.
    """
    net.train()
    if samples <= 0:
        return
    cache = ctx.network_cache
    if cache is not None and cache.load(net, opt, parts):
        return
    batches = real_batch_indices(ctx.seed, samples, ctx.train_x.shape[0], ctx.cfg.idc.batch_net, *parts)
    for b, idx in enumerate(batches):
        idx = idx.to(ctx.train_x.device)
        xb = ctx.aug(ctx.train_x[idx], "idc-real", *parts, b)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), ctx.train_y[idx]).backward()
        opt.step()
    if cache is not None:
        cache.save(net, opt, parts)


def _network(it: int, ctx) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The matching network of outer iteration ``it``: kept for ``fix_iter`` iterations, then renewed."""
    ic = ctx.cfg.idc
    state = ctx.state
    if state.get("net") is None or it % ic.fix_iter == 0:
        k = it // ic.fix_iter
        net = ctx.make_net(derive_seed(ctx.seed, "idc-net", k))
        opt = torch.optim.SGD(net.parameters(), lr=ic.lr_net, momentum=ic.momentum_net,
                              weight_decay=ic.weight_decay_net)
        train_on_real(net, opt, ic.pretrain, ctx, "pretrain", k)
        state["net"], state["opt"] = net, opt
    return state["net"], state["opt"]


def idc_round(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx) -> float:
    """One outer iteration of the IDC loop; returns the mean matching loss per class and inner step."""
    cfg, ic = ctx.cfg, ctx.cfg.idc
    net, opt_net = _network(it, ctx)
    net.train()
    ctx.live.net = net
    if ctx.new_round is not None:
        ctx.new_round()
    if ctx.pixel_range is not None:
        low, high = ctx.pixel_range
        with torch.no_grad():
            syn.copy_(torch.maximum(torch.minimum(syn, high), low))
    if ctx.on_live is not None:
        ctx.on_live(it, "start", net)
    params = list(net.parameters())
    ipc = cfg.ipc
    total = 0.0
    for inner in range(ic.inner_loop):
        for c in range(ctx.num_classes):
            real = ctx.real(c, cfg.batch_real)
            fake = decode_class(syn[c * ipc:(c + 1) * ipc], ic.factor)
            if fake.shape[0] > ic.batch_syn_max:
                g = torch.Generator().manual_seed(derive_seed(ctx.seed, "idc-syn-subset", it, inner, c))
                fake = fake[torch.randperm(fake.shape[0], generator=g)[:ic.batch_syn_max].to(fake.device)]
            real = ctx.aug(real, it, inner, c)
            fake = ctx.aug(fake, it, inner, c)
            y_real = torch.full((real.shape[0],), c, dtype=torch.long, device=ctx.device)
            y_fake = torch.full((fake.shape[0],), c, dtype=torch.long, device=ctx.device)
            g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
            g_fake = torch.autograd.grad(F.cross_entropy(net(fake), y_fake), params, create_graph=True)
            loss = idc_match_loss(g_fake, g_real, ic.metric)
            opt_img.zero_grad(set_to_none=True)
            loss.backward()
            opt_img.step()
            total += float(loss.detach())
        train_on_real(net, opt_net, ic.n_data, ctx, "update", it, inner)
    if ctx.on_live is not None:
        ctx.on_live(it, "end", net)
    return total / (ic.inner_loop * ctx.num_classes)
