"""Reference distillation loops written the way the host codebases write them.

The loops draw every real batch through a sampler with the ``GetImagesAdapter`` interface
(``.init(c, n)``, ``.match(c, n)``, ``.bn(c, n)``), exactly where a host calls its ``get_images``.
Everything random besides the selection itself (network initialisations, augmentation draws,
synthetic noise, mini-batch orders) comes from explicit seeds derived from the run's seed, so
two arms with the same seed differ only through the real images that were selected.

* :func:`distill_dm` -- distribution matching (Zhao & Bilen, DM): a fresh randomly initialised
  network every iteration; per class, match the mean embedding of the real batch and of the
  synthetic images.
* :func:`distill_dc` -- gradient matching (Zhao et al., DC): a fresh network every iteration;
  ``outer_loop`` times: per class, match the gradients of the classification loss on the real
  batch and on the synthetic images, update the synthetic set, then train the network on the
  synthetic set for ``inner_loop`` epochs.
* :func:`dream_plugin.harness.ab.idc.idc_round` -- IDC's loop (Kim et al., as the official DREAM code runs
  it): multi-formation synthetic images, a matching network kept for ``fix_iter`` outer iterations
  and trained on random real batches after every inner step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.adapters.contract import HostLoopSampler
from dream_plugin.harness.models import seeded_convnet
from dream_plugin.core.selector import derive_seed
from dream_plugin.harness.ab.augment import augment
from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.distances import match_loss
from dream_plugin.harness.ab.idc import decode_synset, idc_round
from dream_plugin.harness.ab.validity import check_finite


Sampler = HostLoopSampler
"""What the loops draw through: the adapters' written interface (``init``/``match``/``bn`` and ``records``)."""


def host_get_images(images_all: torch.Tensor, indices_class: Sequence[Sequence[int]]) -> Callable[[int, int], torch.Tensor]:
    """The hosts' sampler: shuffle the class's indices with numpy's global generator, keep the first n."""

    def get_images(c: int, n: int) -> torch.Tensor:
        chosen = np.random.permutation(indices_class[c])[:n]
        return images_all[chosen]

    return get_images


@dataclass
class LiveNet:
    """Holds the network the host is training right now (the adapter reads it via ``net=lambda: ...``)."""

    net: nn.Module | None = None


def seeded_net(cfg: AbConfig, channels: int, num_classes: int, image_size: int, seed: int, device: torch.device) -> nn.Module:
    """The run's ConvNet (``cfg.model``) initialised from ``seed``, see :func:`~dream_plugin.harness.models.seeded_convnet`."""
    m = cfg.model
    return seeded_convnet(channels, num_classes, image_size, seed, device, width=m.width, depth=m.depth, norm=m.norm)


@dataclass
class LoopContext:
    """Everything one distillation run needs besides the synthetic set."""

    cfg: AbConfig
    sampler: Sampler
    live: LiveNet
    make_net: Callable[[int], nn.Module]
    num_classes: int
    seed: int
    device: torch.device
    on_eval: Callable[[int, torch.Tensor, torch.Tensor], None]
    progress: Any = None
    train_x: torch.Tensor | None = None
    """All real training images and labels (the idc loop's network updates draw from them)."""
    train_y: torch.Tensor | None = None
    on_live: Callable[[int, str, nn.Module], None] | None = None
    """Called with (iteration, moment, network) to record how trained the matching network is (idc)."""
    new_round: Callable[[], None] | None = None
    """Called when the idc loop's inner-step counter restarts (DREAM re-clusters at its next call)."""
    pixel_range: tuple[torch.Tensor, torch.Tensor] | None = None
    """Per-channel (low, high) of valid normalised pixels; the idc loop clamps the synthetic set to it."""
    network_cache: Any = None
    """A :class:`~dream_plugin.harness.ab.cache.NetworkCache` of the idc matching network's trajectory, or None."""
    resume: dict[str, Any] | None = None
    """Continue a saved run: ``{"iteration": it, "opt_img": state}`` (``it`` was evaluated already)."""
    on_checkpoint: Callable[[int, torch.Tensor, torch.optim.Optimizer], None] | None = None
    """Called after each evaluation before the last with (iteration, synthetic set, its optimiser)."""
    state: dict[str, Any] = field(default_factory=dict)
    sample_seconds: float = 0.0
    eval_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def real(self, c: int, n: int, kind: str = "match") -> torch.Tensor:
        start = time.perf_counter()
        images = getattr(self.sampler, kind)(c, n)
        images = torch.as_tensor(images).to(self.device)
        self.sample_seconds += time.perf_counter() - start
        return images

    def aug(self, x: torch.Tensor, *parts: Any) -> torch.Tensor:
        if not self.cfg.dsa:
            return x
        return augment(x, self.cfg.dsa_strategy, derive_seed(self.seed, "aug", *parts))


def distill(syn: torch.Tensor, labels: torch.Tensor, ctx: LoopContext) -> torch.Tensor:
    """Run ``cfg.iterations`` iterations of the configured method, evaluating at ``cfg.eval_iterations``."""
    cfg = ctx.cfg
    syn = syn.detach().clone().requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=cfg.image_lr, momentum=cfg.momentum_img)
    step = {"dm": _dm_step, "dc": _dc_step, "idc": idc_round}[cfg.method]
    evals = set(cfg.eval_iterations)
    start_it = 0
    if ctx.resume is not None:
        start_it = int(ctx.resume["iteration"])
        opt_img.load_state_dict(ctx.resume["opt_img"])
    for it in range(start_it, cfg.iterations + 1):
        if it in evals and not (ctx.resume is not None and it == start_it):
            start = time.perf_counter()
            x, y = syn.detach().clone(), labels
            if not bool(torch.isfinite(x).all()):
                check_finite(float("nan"), f"synthetic set at iteration {it} (it holds NaN or infinite pixels)",
                             f"lr_img (--lr-img, now {cfg.image_lr:g})")
            if cfg.method == "idc":  # evaluate on the decoded (multi-formation) training set
                x, y = decode_synset(x, labels, cfg.idc.factor)
            ctx.on_eval(it, x, y)
            ctx.eval_seconds += time.perf_counter() - start
            if ctx.on_checkpoint is not None and it < cfg.iterations:
                ctx.on_checkpoint(it, syn, opt_img)
        if it == cfg.iterations:
            break
        loss = step(it, syn, labels, opt_img, ctx)
        ctx.losses.append(check_finite(loss, f"matching loss at iteration {it}",
                                       f"lr_img (--lr-img, now {cfg.image_lr:g})"))
        if ctx.progress is not None:
            ctx.progress.update(1)
    return syn.detach()


def _class_slice(c: int, ipc: int) -> slice:
    return slice(c * ipc, (c + 1) * ipc)


def _dm_step(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx: LoopContext) -> float:
    cfg = ctx.cfg
    net = ctx.make_net(derive_seed(ctx.seed, "dm-net", it))
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    ctx.live.net = net
    loss = syn.new_zeros(())
    for c in range(ctx.num_classes):
        real = ctx.aug(ctx.real(c, cfg.batch_real), it, c)
        fake = ctx.aug(syn[_class_slice(c, cfg.ipc)], it, c)
        with torch.no_grad():
            mean_real = net.embed(real).mean(dim=0)
        mean_fake = net.embed(fake).mean(dim=0)
        loss = loss + (mean_real - mean_fake).pow(2).sum()
    opt_img.zero_grad(set_to_none=True)
    loss.backward()
    opt_img.step()
    return float(loss.detach()) / ctx.num_classes


def _bn_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _dc_step(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx: LoopContext) -> float:
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
            sl = _class_slice(c, cfg.ipc)
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
