"""IDC-like class loaders and a condensation loop around them.

Contract recreated (see docs/hosts/idc.md): a loader object that is iterated for network
updates, asked ``len()`` and ``.device``, and asked ``class_sample(c)`` for a random real batch of
class c (``batch_size`` images, drawn with torch's generator) or ``class_sample(c, k)`` (k > 0)
for the class's *first* k images (initialisation; k = class size fetches the whole class).
Images are raw values in [0, 1]; labels are int64 on the same device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class MemClassLoader:
    """Keeps every image in memory (uint8 or float) with per-class index lists, like IDC's
    in-memory loader; converts uint8 to float on the way out."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: str = "cpu") -> None:
        self.device = device
        self.batch_size = batch_size
        self.data = [img.to(device) for img in images]
        self.targets = labels.to(device)
        self.nclass = int(labels.max()) + 1
        self.cls_idx = [[] for _ in range(self.nclass)]
        for i, lab in enumerate(labels.tolist()):
            self.cls_idx[lab].append(i)
        self.convert: Callable[[torch.Tensor], torch.Tensor] | None = (
            (lambda x: x.float() / 255) if images.dtype == torch.uint8 else None
        )

    def _stack(self, idx: list[int]) -> torch.Tensor:
        out = torch.stack([self.data[i] for i in idx])
        return self.convert(out) if self.convert is not None else out

    def class_sample(self, c: int, ipc: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        members = self.cls_idx[c]
        if ipc > 0:
            idx = members[:ipc]
        else:
            take = min(len(members), self.batch_size)
            idx = [members[j] for j in torch.randperm(len(members))[:take].tolist()]
        return self._stack(idx), torch.full((len(idx),), c, dtype=torch.int64, device=self.device)

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.data)).tolist()
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self._stack(idx), self.targets[idx]


class DatasetClassLoader:
    """Reads items from a dataset object one by one (no ``data`` list), like IDC's basic loader."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self.dataset = list(zip(images, labels.tolist()))
        self.batch_size = batch_size
        self.device = "cpu"
        self.cls_idx = [[] for _ in range(int(labels.max()) + 1)]
        for i, lab in enumerate(labels.tolist()):
            self.cls_idx[lab].append(i)

    def class_sample(self, c: int, ipc: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        members = self.cls_idx[c]
        idx = members[:ipc] if ipc > 0 else [members[j] for j in torch.randperm(len(members))[: self.batch_size].tolist()]
        return torch.stack([self.dataset[i][0] for i in idx]), torch.tensor([self.dataset[i][1] for i in idx])

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self):
        for b in range(len(self)):
            items = self.dataset[b * self.batch_size:(b + 1) * self.batch_size]
            yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class OpaqueClassLoader:
    """Only ``class_sample``: no per-class index lists to read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self._inner = MemClassLoader(images, labels, batch_size)
        self.batch_size = batch_size
        self.device = "cpu"

    def class_sample(self, c: int, ipc: int = -1):
        return self._inner.class_sample(c, ipc)

    def __len__(self) -> int:
        return len(self._inner)

    def __iter__(self):
        return iter(self._inner)


def run_idc_like(
    loader: Any,
    build: Callable[[], nn.Module],
    *,
    classes: int,
    ipc: int = 2,
    iterations: int = 2,
    inner_loop: int = 2,
    mean: float = 0.5,
    std: float = 0.25,
    seed: int = 0,
) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """IDC-shaped loop: init from ``class_sample(c, ipc)``, then per iteration a new model, per
    inner step each class's ``class_sample(c)`` batch and one pass over the loader."""
    torch.manual_seed(seed)
    calls = []
    syn = []
    for c in range(classes):
        img, lab = loader.class_sample(c, ipc)
        calls.append(("init", c, img, lab))
        syn.append(img.detach().clone())
    syn_t = torch.cat(syn).requires_grad_(True)
    assert loader.device in ("cpu", torch.device("cpu"))
    for _ in range(iterations):
        model = build()
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(inner_loop):
            for c in range(classes):
                img, lab = loader.class_sample(c)
                calls.append(("match", c, img, lab))
                out = model((img - mean) / std)
                loss = nn.functional.cross_entropy(out, lab) + nn.functional.cross_entropy(
                    model((syn_t[c * ipc:(c + 1) * ipc] - mean) / std), torch.full((ipc,), c))
                loss.backward()
                syn_t.grad = None
                model.zero_grad()
            for img, lab in loader:
                opt.zero_grad()
                nn.functional.cross_entropy(model((img - mean) / std), lab).backward()
                opt.step()
        assert len(loader) > 0
    return calls
