"""Disk caches of what every arm of a seed computes identically (``cache: DIR``, ``--cache DIR``).

* :class:`NetworkCache` -- the idc loop's matching-network trajectory;
* :class:`EvalCache` -- the accuracies of an evaluation of an identical synthetic set.

Both give exactly the numbers of a run without them (tests/test_ab_distances.py); they only remove
repeated work. Entries are written atomically, so concurrent ``--jobs`` workers can share a folder,
and an entry that cannot be read is recomputed.

The matching network:

In the idc loop the matching network trains on random real batches drawn from explicit seeds; the
matching steps only read it (gradients are taken with ``torch.autograd.grad``, never written into
the network). So its whole trajectory -- each fresh network after its pretraining, and after every
inner step's update -- is a function of the seed and of the settings listed in
:func:`trajectory_key`, the same in every arm, every gradient distance and every image learning
rate. With ``cache: DIR`` the first run that reaches a state saves it (network and
optimiser state, written atomically) and every later run loads it instead of training, which
removes most of the cost of a well-trained matching network from all but the first run per seed.

Networks with running statistics (``model.norm: batchnorm``) are never cached: their buffers change
with every forward pass in train mode, the matching steps included, so their trajectory depends on
the arm (their evaluations are cached all the same).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


def _common_key(cfg: Any, dataset: Mapping[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """What every cached result depends on: the library, the device, the data, the network and the seed."""
    return {
        "format": 1,
        "torch": torch.__version__,
        "device": device.type,
        "dataset": dict(dataset),
        "model": {"width": cfg.model.width, "depth": cfg.model.depth, "norm": cfg.model.norm},
        "seed": seed,
    }


def trajectory_key(cfg: Any, dataset: Mapping[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """Everything the matching network's trajectory depends on (``cfg`` an :class:`~dream_plugin.harness.ab.config.AbConfig`
    whose loop method has a shared network: the method's ``network_key`` names its own part)."""
    return {**_common_key(cfg, dataset, seed, device), **cfg.loop.network_key(cfg)}


class NetworkCache:
    """Saved matching-network states of one trajectory (one folder per :func:`trajectory_key`)."""

    def __init__(self, root: str | os.PathLike[str], key: Mapping[str, Any]) -> None:
        self.folder = keyed_folder(Path(root) / "network", key)
        self.hits = 0
        self.misses = 0

    def _path(self, parts: tuple[object, ...]) -> Path:
        return self.folder / ("-".join(str(p) for p in parts) + ".pt")

    def load(self, net: nn.Module, opt: torch.optim.Optimizer, parts: tuple[object, ...]) -> bool:
        """Load the state saved under ``parts`` into ``net`` and ``opt``; False when there is none."""
        path = self._path(parts)
        if not path.is_file():
            self.misses += 1
            return False
        try:
            state = torch.load(path, map_location=next(net.parameters()).device, weights_only=True)
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed (and rewritten), never trusted
            self.misses += 1
            return False
        self.hits += 1
        return True

    def save(self, net: nn.Module, opt: torch.optim.Optimizer, parts: tuple[object, ...]) -> None:
        """Save ``net`` and ``opt`` under ``parts`` (atomically: a reader never sees half a file)."""
        state = {"net": net.state_dict(), "opt": opt.state_dict()}
        _atomic_write(self._path(parts), lambda f: torch.save(state, f))


class EvalCache:
    """Test accuracies of evaluated synthetic sets, shared by every arm of a seed.

    Evaluation networks are seeded by (seed, iteration, index) only, so two arms whose synthetic sets
    are identical at an evaluation point -- e.g. ``random`` and ``match-only`` at iteration 0, which
    start from the same initialisation -- get identical accuracies; the second one reads them.
    An entry is keyed by the bytes of the decoded set and its labels and by the iteration, inside a
    folder keyed by everything else the evaluation depends on (:func:`eval_key`).
    """

    def __init__(self, root: str | os.PathLike[str], key: Mapping[str, Any]) -> None:
        self.folder = keyed_folder(Path(root) / "eval", key)
        self.hits = 0

    def _path(self, x: torch.Tensor, y: torch.Tensor, iteration: int) -> Path:
        digest = hashlib.sha256(_tensor_bytes(x))
        digest.update(_tensor_bytes(y))
        digest.update(str(iteration).encode())
        return self.folder / f"{digest.hexdigest()[:32]}.json"

    def get(self, x: torch.Tensor, y: torch.Tensor, iteration: int) -> list[float] | None:
        """The accuracies saved for this set at this iteration, or None."""
        path = self._path(x, y, iteration)
        try:
            accs = json.loads(path.read_text())["accs"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(accs, list) or not all(isinstance(a, float) for a in accs):
            return None
        self.hits += 1
        return accs

    def put(self, x: torch.Tensor, y: torch.Tensor, iteration: int, accs: list[float]) -> None:
        text = json.dumps({"iteration": iteration, "accs": [float(a) for a in accs]})
        _atomic_write(self._path(x, y, iteration), lambda f: f.write(text.encode()))


def eval_key(cfg: Any, dataset: Mapping[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """Everything an evaluation depends on besides the synthetic set and the iteration."""
    return {
        **_common_key(cfg, dataset, seed, device),
        "eval": dataclasses.asdict(cfg.eval),
        "augment": cfg.augment_eval,
        "dsa_strategy": cfg.dsa_strategy if cfg.augment_eval else None,
    }


def dataset_digest(name: str, root: str | None, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The identity of a loaded dataset: its name, the training images' shape and a SHA-256 of every tensor."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(_tensor_bytes(tensors[key]))
    first = next(iter(tensors.values()))
    return {"name": name, "root": root, "shape": list(first.shape), "sha256": digest.hexdigest()}


def keyed_folder(parent: Path, key: Mapping[str, Any]) -> Path:
    """``parent/<hash of key>``, created, with the key itself in key.json for whoever looks."""
    text = json.dumps(key, sort_keys=True)
    folder = parent / hashlib.sha256(text.encode()).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "key.json"
    if not key_file.exists():
        _atomic_write(key_file, lambda f: f.write(text.encode()))
    return folder


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
