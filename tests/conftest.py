"""Shared fixtures: no third-party plugins, no stray env overrides, tiny data and networks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from torch import nn

from dream_plugin.core.config import PluginSettings, Settings
from dream_plugin.core.manager import build_plugin_manager, reset_plugin_manager
from dream_plugin.core.selector import Selector

ENV_VARS = ("DREAM_STRATEGY", "DREAM_INIT_STRATEGY", "DREAM_SEED", "DREAM_PLUGIN_CONFIG", "DREAM_PLUGIN_DISABLE_AUTOLOAD",
            "DREAM_RECORDS", "DREAM_LOG")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def isolated_pm():
    """A plugin manager with only the built-in plugin (no entry points)."""
    return build_plugin_manager(PluginSettings(autoload=False))


@pytest.fixture
def make_selector(isolated_pm):
    def make(**kwargs) -> Selector:
        return Selector(Settings(**kwargs), plugin_manager=isolated_pm)

    return make


class TinyBNNet(nn.Module):
    """conv-BN-ReLU-pool then Linear, with ``embed`` like the hosts' ConvNets."""

    def __init__(self, channels: int = 1, classes: int = 3, width: int = 8, size: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AvgPool2d(2)
        )
        self.classifier = nn.Linear(width * (size // 2) ** 2, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@pytest.fixture
def tiny_pool():
    """Three well-separated groups of 8x8 images in one class pool of 60 images."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 1, 8, 8, generator=g) * 3
    images = torch.cat([base[i] + 0.1 * torch.randn(20, 1, 8, 8, generator=g) for i in range(3)])
    return images


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyBNNet()


def gen(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator (tests never touch torch's global RNG)."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, np.ndarray]:
    """400 points in 5 well-separated Gaussian blobs (6-d), with their true labels."""
    x, y = make_blobs(n_samples=400, centers=5, n_features=6, cluster_std=0.6, random_state=3)
    return torch.from_numpy(x).float(), y


@pytest.fixture
def one_thread():
    """Tiny problems: one intra-op thread avoids OpenMP spin-waits on a shared, busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _writable(path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder that refuses new files: a read-only temporary folder, or (as root, who ignores
    permission bits) a read-only system folder; skips when there is none."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    if _writable(d):  # root ignores permission bits: fall back to a read-only system folder
        d.chmod(0o755)
        d = next((p for p in ("/sys", "/proc") if os.path.isdir(p) and not _writable(p)), None)
        if d is None:
            pytest.skip("no unwritable folder available to this user")
    yield d
    if not isinstance(d, str):
        d.chmod(0o755)


CHECKOUTS = Path(__file__).parent / "fakehosts" / "checkouts"
"""Fake host checkouts, written from the hosts' contracts (docs/hosts/), never from their code."""


@pytest.fixture
def checkout(tmp_path):
    """A fresh copy of one fake checkout: ``checkout("dm")`` -> its folder under tmp_path."""

    def make(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(CHECKOUTS / name, dst)
        return dst

    return make
