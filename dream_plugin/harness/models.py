"""A small ConvNet in the hosts' style (conv-norm-relu-pool blocks, then a linear classifier).

Used by the demo and the A/B harness; ``embed`` returns the flattened features, as the DC/DSA/DM
ConvNets do, so DREAM embeds through the same method a host network offers.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("instancenorm", "batchnorm", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: {kind!r} is not allowed; expected one of {', '.join(NORMS)}")


class ConvNet(nn.Module):
    """ConvNet(depth, width, norm) for (channels, size, size) inputs and ``num_classes`` outputs."""

    def __init__(
        self, channels: int, num_classes: int, image_size: int, *, width: int = 128, depth: int = 3,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        layers: list[nn.Module] = []
        size = image_size
        in_ch = channels
        for _ in range(depth):
            layers += [nn.Conv2d(in_ch, width, 3, padding=1), _norm(norm, width), nn.ReLU(inplace=True)]
            if size >= 2:
                layers.append(nn.AvgPool2d(2))
                size //= 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def seeded_convnet(
    channels: int, num_classes: int, image_size: int, seed: int, device: torch.device | str, *,
    width: int = 128, depth: int = 3, norm: str = "instancenorm",
) -> ConvNet:
    """A :class:`ConvNet` initialised from ``seed`` without touching (or depending on) torch's global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(channels, num_classes, image_size, width=width, depth=depth, norm=norm)
    return net.to(device)
