"""The distillation driver of the reference loops, and what every loop step is given (:class:`LoopContext`).

:func:`distill` runs ``cfg.iterations`` steps of the configured loop method (``cfg.loop``, one
module each in :mod:`dream_plugin.harness.ab.methods`: dm, dc, idc), written the way the host
codebases write them, and evaluates the decoded synthetic set at ``cfg.eval_iterations``.

The steps draw every real batch through a sampler with the ``GetImagesAdapter`` interface
(``.init(c, n)``, ``.match(c, n)``, ``.bn(c, n)``), exactly where a host calls its ``get_images``.
Everything random besides the selection itself (network initialisations, augmentation draws,
synthetic noise, mini-batch orders) comes from explicit seeds derived from the run's seed, so
two arms with the same seed differ only through the real images that were selected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from dream_plugin.adapters.contract import HostLoopSampler
from dream_plugin.harness.models import seeded_convnet
from dream_plugin.core.selector import derive_seed
from dream_plugin.harness.ab.augment import augment
from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.validity import check_finite
from dream_plugin.harness.mosaic import decode_synset


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
    """The loop method's own state between steps (idc: its matching network and optimiser)."""
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
    """Run ``cfg.iterations`` iterations of the configured method, evaluating at ``cfg.eval_iterations``
    the training set the stored synthetic set decodes into (multi-formation: idc)."""
    cfg = ctx.cfg
    syn = syn.detach().clone().requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=cfg.image_lr, momentum=cfg.momentum_img)
    step, factor = cfg.loop.step, cfg.loop.factor(cfg)
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
            x, y = decode_synset(x, labels, factor)
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
