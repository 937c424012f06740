"""Host-independent pieces: a per-class sampler function and a class-balanced batch sampler.

For codebases without a ``get_images``-style function or an IDC class loader:

* :func:`make_class_sampler` turns an image tensor plus labels into ``sampler(c, n) -> images``
  answered by the configured strategy (this adapter wraps no host sampler, so ``random`` here is
  ``RandomStrategy``, the selector's seeded uniform draw, recorded as ``strategy:random``);
* :class:`RepresentativeBatchSampler` is a ``torch.utils.data.Sampler`` of index lists, usable as
  ``DataLoader(dataset, batch_sampler=RepresentativeBatchSampler(...))``: every batch holds
  ``n_per_class`` images of each class, chosen per class by the configured strategy.

Neither wraps a host sampler, so every arm (``random`` included) answers through the selector and a
bad call gets the same answer in every arm: ``n`` above a class's images is the selector's
``n=25 exceeds the 20 images of class 0; ...``, a class id without images (negative included) is
``class -1 has no images (classes: [0, 1, 2])``. (``RepresentativeBatchSampler`` caps
``n_per_class`` at each class's size itself.)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from dream_plugin.core.selector import Selector

from ._common import check_class_n, default_selector, select_positions
from .network import NetworkSource

__all__ = ["ClassSampler", "make_class_sampler", "RepresentativeBatchSampler", "class_pools"]


def class_pools(labels: Any) -> dict[int, torch.Tensor]:
    """``{class: LongTensor of the indices with that label}`` for 1-D integer labels."""
    t = torch.as_tensor(labels)
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D (one class id per image), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids, got dtype {t.dtype}")
    t = t.to("cpu", torch.int64)
    return {int(c): torch.nonzero(t == c).reshape(-1) for c in torch.unique(t).tolist()}


class ClassSampler:
    """``sampler(c, n) -> images`` of class ``c`` from ``images`` / ``labels``, by the configured strategy.

    ``kind`` is the call kind of plain calls ('match' by default); ``.init(c, n)`` and
    ``.match(c, n)`` are explicit. Returned images are rows of ``images`` (same device and dtype).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: Any,
        *,
        net: Any = None,
        net_factory: Callable[[], torch.nn.Module] | None = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
        selector: Selector | None = None,
        kind: str = "match",
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() < 1:
            raise TypeError(f"images must be a tensor (N, ...), got {type(images).__name__}")
        if kind not in ("match", "init"):
            raise ValueError(f"kind must be 'match' or 'init', got {kind!r}")
        self.images = images
        self.pools = class_pools(labels)
        n_labels = sum(p.numel() for p in self.pools.values())
        if n_labels != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {n_labels} labels")
        self.selector = default_selector(selector)
        self.source = NetworkSource(net=net, net_factory=net_factory, embed_fn=embed_fn, normalize=normalize)
        self.kind = kind

    def __call__(self, c: int, n: int) -> torch.Tensor:
        return self._get(self.kind, *check_class_n(c, n))

    def init(self, c: int, n: int) -> torch.Tensor:
        return self._get("init", *check_class_n(c, n))

    def match(self, c: int, n: int) -> torch.Tensor:
        return self._get("match", *check_class_n(c, n))

    def _get(self, kind: str, c: int, n: int) -> torch.Tensor:
        return self.images[self.indices(kind, c, n).to(self.images.device)]

    def indices(self, kind: str, c: int, n: int) -> torch.Tensor:
        """Dataset indices (CPU int64) of the ``n`` chosen images of class ``c``."""
        pool = self.pools.get(c)
        if pool is None:
            raise IndexError(f"class {c} has no images (classes: {sorted(self.pools)})")
        images = self.images

        def load(positions: torch.Tensor) -> torch.Tensor:
            return images[pool[positions].to(images.device)]

        positions = select_positions(self.selector, self.source, kind, c, n, pool, load)
        return pool[positions]

    @property
    def records(self) -> list:
        return self.selector.records


def make_class_sampler(images: torch.Tensor, labels: Any, **kwargs: Any) -> ClassSampler:
    """Function form of :class:`ClassSampler`: ``get_images = make_class_sampler(x, y, net=lambda: net)``."""
    return ClassSampler(images, labels, **kwargs)


class RepresentativeBatchSampler(Sampler):
    """Class-balanced batches of dataset indices, each class's part chosen by the configured strategy.

    Parameters
    ----------
    labels:
        1-D class id of every dataset item.
    n_per_class:
        Items of each class per batch (capped at the class size).
    dataset_images:
        Tensor of all items' images (N, ...), indexed by dataset index; or give ``load``.
    load:
        ``load(indices) -> images`` for a CPU LongTensor of dataset indices (e.g. stacking
        ``dataset[i][0]``), when the images are not in one tensor.
    net, net_factory, embed_fn, normalize, selector:
        As for the other adapters (``net=lambda: model``: the model being trained right now).
    num_batches:
        Batches per iteration (an epoch); default: ``ceil(N / (n_per_class * classes))``.
    classes:
        Which classes to include (default: every label present).

    With ``dream`` the picks of a class are re-clustered every ``options.dream.interval`` batches
    (in between, the same representatives are reused), always with the network alive at that
    moment. The ``random`` strategy gives the selector's seeded uniform draws.
    """

    def __init__(
        self,
        labels: Any,
        n_per_class: int,
        *,
        dataset_images: torch.Tensor | None = None,
        load: Callable[[torch.Tensor], torch.Tensor] | None = None,
        net: Any = None,
        net_factory: Callable[[], torch.nn.Module] | None = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
        selector: Selector | None = None,
        num_batches: int | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        if isinstance(n_per_class, bool) or not hasattr(n_per_class, "__index__") or int(n_per_class) < 1:
            raise TypeError(f"n_per_class must be a positive int, got {n_per_class!r}")
        if (dataset_images is None) == (load is None):
            raise TypeError("give exactly one of dataset_images= (a tensor) or load= (indices -> images)")
        if dataset_images is not None and not isinstance(dataset_images, torch.Tensor):
            raise TypeError(f"dataset_images must be a tensor, got {type(dataset_images).__name__}")
        if load is not None and not callable(load):
            raise TypeError(f"load must be callable (indices -> images), got {type(load).__name__}")
        self.pools = class_pools(labels)
        if classes is not None:
            missing = [c for c in classes if int(c) not in self.pools]
            if missing:
                raise ValueError(f"classes {missing} have no items in labels")
            self.pools = {int(c): self.pools[int(c)] for c in classes}
        self.n_per_class = int(n_per_class)
        self.dataset_images = dataset_images
        self._load = load
        self.selector = default_selector(selector)
        self.source = NetworkSource(net=net, net_factory=net_factory, embed_fn=embed_fn, normalize=normalize)
        total = sum(p.numel() for p in self.pools.values())
        per_batch = sum(min(self.n_per_class, p.numel()) for p in self.pools.values())
        if num_batches is None:
            num_batches = max(1, -(-total // per_batch))
        if isinstance(num_batches, bool) or not hasattr(num_batches, "__index__") or int(num_batches) < 1:
            raise TypeError(f"num_batches must be a positive int, got {num_batches!r}")
        self.num_batches = int(num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def _loader_for(self, pool: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.dataset_images is not None:
            images = self.dataset_images

            def load(positions: torch.Tensor) -> torch.Tensor:
                return images[pool[positions].to(images.device)]
        else:
            user_load = self._load

            def load(positions: torch.Tensor) -> torch.Tensor:
                return user_load(pool[positions])

        return load

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c, pool in self.pools.items():
                n = min(self.n_per_class, pool.numel())
                positions = select_positions(self.selector, self.source, "match", c, n, pool, self._loader_for(pool))
                batch.extend(pool[positions].tolist())
            yield batch

    @property
    def records(self) -> list:
        return self.selector.records
