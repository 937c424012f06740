"""MTT (GeorgeCazenavette/mtt-distillation): representative initialisation, optional expert batches.

``distill.py`` calls its ``get_images(c, n)`` only to initialise the synthetic set from real
images, before any network exists, so :func:`wrap_mtt_get_images` fixes every call's kind to
``init`` and needs ``net_factory`` for the dream arm (a fresh network built with MTT's own
``get_network``; MTT's ConvNet has no ``embed``, its ``features`` block then flatten is used).

``buffer.py`` trains the expert trajectories from a shuffled ``DataLoader`` over the whole train
set, consumed only by iterating it. :class:`RepresentativeBatches` is an *optional* replacement:
an iterable of ``(images, labels)`` batches, class-balanced, each class's part chosen by the
configured strategy with the expert being trained right now. It is off by default: unless you
swap it in, the experts train on the host's own DataLoader. Give ``host_sampler=trainloader`` to
keep the A/B switch in the config: with the ``random`` strategy it simply iterates the host's loader.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence

import torch

from dream_plugin.core.selector import Selector

from ._common import default_selector, uses_host
from .generic import RepresentativeBatchSampler
from .get_images import GetImagesAdapter
from .host_answer import HostSamplerError, check_batch

__all__ = ["wrap_mtt_get_images", "RepresentativeBatches"]


def wrap_mtt_get_images(
    get_images: Callable[[int, int], torch.Tensor],
    images_all: torch.Tensor,
    indices_class: Sequence[Any],
    *,
    net_factory: Callable[[], torch.nn.Module] | None = None,
    **kwargs: Any,
) -> GetImagesAdapter:
    """MTT's ``get_images`` with every call treated as initialisation (``kind="init"``)."""
    kwargs.setdefault("kind", "init")
    return GetImagesAdapter(get_images, images_all, indices_class, net_factory=net_factory, **kwargs)


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    tensors = getattr(data, "tensors", None)  # torch's TensorDataset and MTT's own keep them here
    if isinstance(tensors, (tuple, list)) and len(tensors) >= 2:
        return tensors[0], tensors[1]
    images = getattr(data, "images", None)
    labels = getattr(data, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return images, labels
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
        return torch.stack([torch.as_tensor(x[0]) for x in items]), torch.as_tensor([int(x[1]) for x in items])
    raise TypeError(
        "dataset_or_tensors must be (images, labels) tensors, a TensorDataset, or a dataset of (image, label) "
        f"items, got {type(data).__name__}"
    )


class RepresentativeBatches:
    """Class-balanced ``(images, labels)`` batches of representatives, for expert training.

    Parameters
    ----------
    dataset_or_tensors:
        ``(images, labels)`` tensors, a TensorDataset, or any dataset of ``(image, label)`` items
        (read once into memory).
    batch_size:
        Images per batch; each class gets ``batch_size // num_classes`` (at least 1).
    net:
        ``lambda: teacher_net``: the expert being trained right now.
    selector:
        A :class:`dream_plugin.Selector` (default: from $DREAM_PLUGIN_CONFIG / environment).
    num_batches:
        Batches per pass (an epoch); default: as many as a DataLoader over the data would give.
    host_sampler:
        The host sampler (the host's own DataLoader); iterated unchanged when the strategy for
        matching is ``random``. ``fallback=`` is the older name of this argument.
    embed_fn, normalize:
        As for the other adapters.
    """

    def __init__(
        self,
        dataset_or_tensors: Any,
        batch_size: int,
        *,
        net: Any,
        selector: Selector | None = None,
        num_batches: int | None = None,
        host_sampler: Any = None,
        fallback: Any = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
    ) -> None:
        if isinstance(batch_size, bool) or not hasattr(batch_size, "__index__") or int(batch_size) < 1:
            raise TypeError(f"batch_size must be a positive int, got {batch_size!r}")
        images, labels = _as_tensors(dataset_or_tensors)
        labels = torch.as_tensor(labels).to("cpu", torch.int64)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        n_classes = int(torch.unique(labels).numel())
        n_per_class = max(1, int(batch_size) // n_classes)
        if num_batches is None:
            num_batches = max(1, -(-images.shape[0] // int(batch_size)))
        self.images = images
        self.labels = labels
        if host_sampler is not None and fallback is not None:
            raise TypeError("give host_sampler= (or its older name fallback=), not both")
        self.host_sampler = host_sampler if host_sampler is not None else fallback
        self.selector = default_selector(selector)
        self.sampler = RepresentativeBatchSampler(
            labels, n_per_class, dataset_images=images, net=net, selector=self.selector,
            num_batches=num_batches, embed_fn=embed_fn, normalize=normalize,
        )

    def __len__(self) -> int:
        if self.host_sampler is not None and uses_host(self.selector, "match"):
            return len(self.host_sampler)
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.host_sampler is not None and uses_host(self.selector, "match"):
            yield from self._host_batches()
            return
        for batch in self.sampler:
            idx = torch.as_tensor(batch, dtype=torch.int64)
            yield self.images[idx.to(self.images.device)], self.labels[idx]

    def _host_batches(self) -> Iterator[Any]:
        """The host sampler's batches, untouched, each recorded (class_id -1: a batch of every class).

        A batch that is not ``(images, labels)`` with at least one image is refused naming the host
        sampler (:func:`~dream_plugin.adapters.host_answer.check_batch`), the record noting it.
        """
        batches = iter(self.host_sampler)
        index = 0
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            n = _batch_size(batch)
            note = "expert-training batch from the host's own loader"
            problem = check_batch(batch, index)
            self.selector.record_host_call(
                "match", -1, n, time.perf_counter() - start,
                pool_size=int(self.labels.numel()), note=f"unusable answer: {problem}; {note}" if problem else note,
            )
            if problem:
                raise HostSamplerError(problem)
            index += 1
            yield batch

    @property
    def fallback(self) -> Any:
        """Older name of :attr:`host_sampler`."""
        return self.host_sampler

    @property
    def records(self) -> list:
        return self.selector.records


def _batch_size(batch: Any) -> int:
    """Items in a loader batch: the first dimension of its first tensor (0 if none is found)."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 0
