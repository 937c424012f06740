"""A disk cache of the idc loop's matching-network trajectory, shared by every arm of a seed.

In the idc loop the matching network trains on random real batches drawn from explicit seeds; the
matching steps only read it (gradients are taken with ``torch.autograd.grad``, never written into
the network). So its whole trajectory -- each fresh network after its pretraining, and after every
inner step's update -- is a function of the seed and of the settings listed in
:func:`trajectory_key`, the same in every arm, every gradient distance and every image learning
rate. With ``idc.network_cache: DIR`` the first run that reaches a state saves it (network and
optimiser state, written atomically) and every later run loads it instead of training, which
removes most of the cost of a well-trained matching network from all but the first run per seed.

Networks with running statistics (``model.norm: batchnorm``) are refused by the configuration: their
buffers change with every forward pass in train mode, the matching steps included, so their
trajectory depends on the arm.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


def trajectory_key(cfg: Any, dataset: Mapping[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """Everything the matching network's trajectory depends on (``cfg`` an :class:`~dream_plugin.ab.config.AbConfig`)."""
    i = cfg.idc
    return {
        "format": 1,
        "torch": torch.__version__,
        "device": device.type,
        "dataset": dict(dataset),
        "model": {"width": cfg.model.width, "depth": cfg.model.depth, "norm": cfg.model.norm},
        "idc": {"fix_iter": i.fix_iter, "n_data": i.n_data, "pretrain": i.pretrain, "batch_net": i.batch_net,
                "lr_net": i.lr_net, "momentum_net": i.momentum_net, "weight_decay_net": i.weight_decay_net},
        "dsa": cfg.dsa,
        "dsa_strategy": cfg.dsa_strategy if cfg.dsa else None,
        "seed": seed,
    }


class NetworkCache:
    """Saved matching-network states of one trajectory (one folder per :func:`trajectory_key`)."""

    def __init__(self, root: str | os.PathLike[str], key: Mapping[str, Any]) -> None:
        text = json.dumps(key, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:20]
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            _atomic_write(key_file, lambda f: f.write(text.encode()))
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


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
