"""The network a diagnosis looks through: fresh, trained on real data, or the user's own."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from dream_plugin.core.config import ConfigError
from dream_plugin.harness.data import ImageDataset
from dream_plugin.harness.models import seeded_convnet
from dream_plugin.core.selector import derive_seed
from dream_plugin.harness.diagnose.config import DiagnoseConfig


def convnet(cfg: DiagnoseConfig, data: ImageDataset, seed: int, device: torch.device) -> nn.Module:
    """The project's ConvNet for ``data`` (``cfg.width``/``depth``/``norm``), initialised from ``seed``."""
    return seeded_convnet(data.channels, data.num_classes, data.image_size, seed, device, width=cfg.width,
                          depth=cfg.depth, norm=cfg.norm)


def train_steps(net: nn.Module, data: ImageDataset, steps: int, cfg: DiagnoseConfig, device: torch.device) -> None:
    """``steps`` SGD steps (momentum 0.9) on random real batches drawn from an explicit generator."""
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "diagnose-train"))
    opt = torch.optim.SGD(net.parameters(), lr=cfg.train_lr, momentum=0.9, weight_decay=5e-4)
    x, y = data.train_images.to(device), data.train_labels.to(device)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (cfg.train_batch,), generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()


def build_network(spec: str, cfg: DiagnoseConfig, data: ImageDataset, device: torch.device) -> nn.Module:
    """The network named by ``spec`` (see :attr:`DiagnoseConfig.networks`)."""
    kind, _, rest = spec.partition(":")
    seed = derive_seed(cfg.seed, "diagnose-net")
    if kind == "fresh":
        return convnet(cfg, data, seed, device)
    if kind == "trained":
        net = convnet(cfg, data, seed, device)
        train_steps(net, data, int(rest), cfg, device)
        return net
    if kind == "factory":
        module, _, attr = rest.rpartition(":")
        if not module:
            raise ConfigError(f"networks: {spec!r} needs factory:module:function")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"networks: cannot load the factory {rest!r}: {exc}") from exc
        net = fn()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"networks: the factory {rest!r} returned {type(net).__name__}, not an nn.Module")
        return net.to(device)
    if kind == "checkpoint":
        path = Path(rest)
        if not path.is_file():
            raise ConfigError(f"networks: checkpoint {rest!r} is not a file")
        net = convnet(cfg, data, seed, device)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched checkpoint
            raise ConfigError(f"networks: checkpoint {rest!r} is not a state_dict of the ConvNet of width "
                              f"{cfg.width} and depth {cfg.depth}: {exc}") from exc
        return net
    raise ConfigError(f"networks: {spec!r} is not allowed")
