"""What every benchmark section shares: thread control, the load average, the data sets, the
interleaved timer and the reference inertia."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from dream_plugin.engine.clustering import nearest_centroid


def set_threads(n: int) -> None:
    """Same thread count for every contender (torch, faiss, OpenMP/BLAS pools of scikit-learn).

    On a loaded machine, 2 OpenMP threads on 2 busy cores spin-wait on each other and run up to
    25x slower than 1 thread; ``--threads 1`` gives stable ratios there.
    """
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def inertia64(x: torch.Tensor, c: torch.Tensor) -> float:
    """Our reference inertia: float64 sum of squared distances to the nearest centroid."""
    return float(nearest_centroid(x.double().cpu(), c.detach().double().cpu())[1].sum())


def blobs(n: int, d: int, centers: int, g: torch.Generator) -> torch.Tensor:
    cen = torch.randn(centers, d, generator=g) * 3.0
    return cen[torch.randint(centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def mnist_embeddings(width: int = 128, seed: int = 0) -> tuple[list[torch.Tensor], Any, Any]:
    """Per-class embeddings of the MNIST subset under a freshly initialised ConvNet."""
    from dream_plugin.harness.data import load_dataset
    from dream_plugin.engine.embedding import embed_images
    from dream_plugin.harness.models import ConvNet

    ds = load_dataset("mnist")
    torch.manual_seed(seed)
    net = ConvNet(ds.channels, ds.num_classes, ds.image_size, width=width)
    feats = [
        embed_images(net.embed, ds.train_images[idx], network=net) for idx in ds.class_indices()
    ]
    return feats, ds, net


def engine_data_sets(quick: bool) -> tuple[dict[str, torch.Tensor], tuple[int, ...], list[torch.Tensor]]:
    """The engine's data sets ``{name: (N, D)}``, its K values and the ten MNIST classes' embeddings.

    One MNIST-subset class under a fresh ConvNet (width 128), random normal rows and Gaussian blobs
    (100 centres) drawn from one generator seeded 0; 5000 x 2048 (quick: 2000 x 256).
    """
    g = torch.Generator().manual_seed(0)
    n, d, ks = (2000, 256, (10, 64)) if quick else (5000, 2048, (10, 64, 128))
    feats, _, _ = mnist_embeddings()
    sets = {
        f"mnist-convnet class 0 ({feats[0].shape[0]}x{feats[0].shape[1]})": feats[0],
        f"random-normal ({n}x{d})": torch.randn(n, d, generator=g),
        f"blobs, 100 centres ({n}x{d})": blobs(n, d, 100, g),
    }
    return sets, ks, feats


def bench(fns: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[float]]:
    """Interleaved timing: each repeat runs every contender once, in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return times



def make_selector(strategy: str = "dream", **dream_options):
    from dream_plugin.core.config import Settings
    from dream_plugin.core.selector import Selector

    opts = {"dream": dream_options} if strategy == "dream" and dream_options else {}
    return Selector(Settings(strategy=strategy, options=opts))
