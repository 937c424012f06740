"""Where a precompute job gets each class's features: given tensors, a synthetic source, or a
dataset embedded with a network."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from dream_plugin.engine.precompute.picks import Fingerprint
from dream_plugin.engine.precompute.job import PrecomputeReport, run_precompute


def precompute_from_features(
    features: Sequence[torch.Tensor] | Callable[[int], torch.Tensor],
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    pool_sizes: Sequence[int] | None = None,
    labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> PrecomputeReport:
    """Picks from features given directly: one (pool_size_c, D) tensor per class, or a function
    ``c -> features`` (then ``pool_sizes`` is required; features are produced class by class).

    The fingerprint comes from ``labels`` (the dataset's labels, whose order defines the pools)
    when given, else from the pool sizes (class-major labels). Other keywords: :func:`run_precompute`.
    """
    if callable(features):
        if pool_sizes is None and labels is None:
            raise TypeError("features given as a function need pool_sizes= (or labels=) to know the classes")
        features_of = features
    else:
        seq = list(features)
        features_of = seq.__getitem__
        sizes = [int(t.shape[0]) for t in seq]
        if pool_sizes is not None and list(pool_sizes) != sizes:
            raise ValueError(f"pool_sizes {list(pool_sizes)[:10]} do not match the features' rows {sizes[:10]}")
        pool_sizes = sizes
    fp = Fingerprint.from_labels(labels, len(pool_sizes) if pool_sizes is not None else None) if labels is not None \
        else Fingerprint.from_pool_sizes(pool_sizes)  # type: ignore[arg-type]
    if pool_sizes is not None and tuple(int(s) for s in pool_sizes) != fp.pool_sizes:
        raise ValueError(f"labels give pool sizes {list(fp.pool_sizes)[:10]}, but pool_sizes are {list(pool_sizes)[:10]}")
    return run_precompute(features_of, fp, ks, out, **kwargs)


def synthetic_features(num_classes: int, per_class: int, dim: int, *, seed: int = 0, modes: int = 16):
    """A deterministic synthetic source (for scale measurements): ``(features_of, pool_sizes)``.

    Each class is a mixture of ``modes`` Gaussian blobs in ``dim`` dimensions, generated on demand
    from ``(seed, class)``, so no more than one class is ever in memory.
    """
    for name, v in (("classes", num_classes), ("per_class", per_class), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"synthetic {name}: {v!r} is not allowed; expected an integer >= 1")
    from dream_plugin.common.seeds import derive_seed

    def features_of(c: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(seed, "synthetic", c))
        centers = 4.0 * torch.randn(modes, dim, generator=g)
        which = torch.randint(0, modes, (per_class,), generator=g)
        return centers[which] + torch.randn(per_class, dim, generator=g)

    return features_of, [per_class] * num_classes


def precompute_dataset(
    dataset: Any,
    network: nn.Module,
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    embed_fn: Callable | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    source: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PrecomputeReport:
    """Embed an :class:`~dream_plugin.harness.data.ImageDataset`'s training images with ``network`` (as it
    is: put it in eval mode first for running BatchNorm statistics) and write the picks file.

    Pools are ``dataset.class_indices()``; each class is embedded in batches of ``batch_size``
    and only its features are kept while it is clustered.
    """
    from dream_plugin.engine.embedding import embed_images, resolve_embedder

    embedder, how = resolve_embedder(network, embed_fn=embed_fn)
    pools = dataset.class_indices()
    fp = Fingerprint.from_labels(dataset.train_labels, dataset.num_classes)
    images = dataset.train_images

    def features_of(c: int) -> torch.Tensor:
        pool = pools[c]
        return embed_images(embedder, lambda pos: images[pool[pos]], int(pool.numel()), batch_size=batch_size,
                            device=device, network=network).cpu()

    src = {"dataset": getattr(dataset, "name", "?"), "embedding": how, **dict(source or {})}
    return run_precompute(features_of, fp, ks, out, source=src, **kwargs)

