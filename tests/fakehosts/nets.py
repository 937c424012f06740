"""Tiny networks shaped like the hosts' (what matters is how features can be taken out of them)."""

from __future__ import annotations

import torch
from torch import nn


class EmbedConvNet(nn.Module):
    """Conv (+ optional BatchNorm) with an ``embed`` method, like DC/DSA/DM ConvNets."""

    def __init__(self, channels: int = 1, classes: int = 3, width: int = 8, size: int = 8, bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(width))
        layers += [nn.ReLU(), nn.AvgPool2d(2)]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * (size // 2) ** 2, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class FeaturesNet(nn.Module):
    """A ``features`` block then a classifier, no ``embed`` (like MTT's ConvNet)."""

    def __init__(self, channels: int = 1, classes: int = 3, width: int = 8, size: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.classifier = nn.Linear(width * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class PlainMLP(nn.Module):
    """Only Linear layers, no ``embed`` (like the hosts' MLP): features = input of the last Linear."""

    def __init__(self, channels: int = 1, classes: int = 3, size: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.fc_in = nn.Linear(channels * size * size, hidden)
        self.fc_out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(torch.relu(self.fc_in(x.flatten(1))))


class ReturnFeaturesNet(nn.Module):
    """``forward(x, return_features=True)`` gives ``(logits, features)`` (like IDC's ConvNet)."""

    def __init__(self, channels: int = 3, classes: int = 3, width: int = 8, size: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(width * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.pool(torch.relu(self.norm(self.conv(x)))).flatten(1)
        logits = self.classifier(feats)
        return (logits, feats) if return_features else logits


def host_constructor(kind: str = "conv", *, channels: int = 1, classes: int = 3, size: int = 8,
                     bn: bool = False, dataparallel: bool = False) -> nn.Module:
    """A host-style network constructor: like DC's and MTT's, it *reseeds torch's global RNG* first
    (here from a draw of that same generator, so runs stay reproducible)."""
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    if kind == "conv":
        net: nn.Module = EmbedConvNet(channels, classes, size=size, bn=bn)
    elif kind == "features":
        net = FeaturesNet(channels, classes, size=size)
    elif kind == "mlp":
        net = PlainMLP(channels, classes, size=size)
    elif kind == "return_features":
        net = ReturnFeaturesNet(channels, classes, size=size)
    else:
        raise ValueError(kind)
    return nn.DataParallel(net) if dataparallel else net
