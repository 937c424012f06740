"""Evaluate a synthetic set as the hosts' ``evaluate_synset`` does: train fresh ConvNets on it, test.

Each evaluation network is initialised from a seed that depends only on the run's seed, the
evaluation iteration and the network's index, so every arm is judged by identical networks,
identical mini-batch orders and identical augmentation draws.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.core.selector import derive_seed
from dream_plugin.harness.ab.augment import augment
from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.validity import check_finite


def train_and_test(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    cfg: AbConfig,
    seed: int,
) -> float:
    """SGD (momentum, weight decay) for ``eval.epochs`` epochs, lr x0.1 halfway; returns test accuracy."""
    e = cfg.eval
    opt = torch.optim.SGD(net.parameters(), lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay)
    decay_at = e.epochs // 2
    g = torch.Generator().manual_seed(seed)
    use_aug = cfg.augment_eval
    net.train()
    for ep in range(e.epochs):
        if ep == decay_at and ep > 0:
            for group in opt.param_groups:
                group["lr"] = e.lr * 0.1
        order = torch.randperm(x.shape[0], generator=g).to(x.device)
        for start in range(0, x.shape[0], e.batch):
            idx = order[start:start + e.batch]
            xb = x[idx]
            if use_aug:
                xb = augment(xb, cfg.dsa_strategy, int(torch.randint(0, 2**62, (), generator=g)))
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xb), y[idx])
            loss.backward()
            opt.step()
        # once per epoch (a sync on GPU): a diverged evaluation network would else report chance accuracy
        check_finite(float(loss.detach()), f"evaluation network's training loss in epoch {ep + 1}",
                     f"eval.lr (--eval-lr, now {e.lr:g})")
    return accuracy(net, test_x, test_y)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Test accuracy in eval mode; the network's train/eval mode is restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        correct = 0
        for start in range(0, x.shape[0], batch):
            correct += int((net(x[start:start + batch]).argmax(1) == y[start:start + batch]).sum())
    finally:
        net.train(was_training)
    return correct / max(1, x.shape[0])


def evaluate_synset(
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    cfg: AbConfig,
    make_net: Callable[[int], nn.Module],
    run_seed: int,
    iteration: int,
) -> list[float]:
    """Test accuracies of ``eval.nets`` fresh networks trained on the synthetic set ``(x, y)``."""
    x = x.detach()
    accs = []
    for k in range(cfg.eval.nets):
        net = make_net(derive_seed(run_seed, "eval-net", iteration, k))
        accs.append(train_and_test(net, x, y, test_x, test_y, cfg, derive_seed(run_seed, "eval-train", iteration, k)))
    return accs
