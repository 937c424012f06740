"""A short selection demo: random vs DREAM picks on the embedded MNIST subset, with a fresh ConvNet.

It measures how well the picks cover their class in the network's embedding space: the mean
squared distance from every image of the class to its nearest pick (lower is more representative).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from dream_plugin.core.config import Settings
from dream_plugin.harness.data import load_dataset
from dream_plugin.harness.models import ConvNet
from dream_plugin.core.selector import Selector


def coverage(feats: torch.Tensor, picks: torch.Tensor) -> float:
    """Mean squared distance from each row of ``feats`` to its nearest picked row."""
    centres = feats[picks]
    d = (feats.pow(2).sum(1, keepdim=True) - 2 * feats @ centres.T + centres.pow(2).sum(1)).clamp_min(0)
    return float(d.min(dim=1).values.mean())


def run_demo(dataset: str = "mnist", n: int = 10, seed: int = 0, strategies: tuple[str, ...] = ("random", "dream"),
             *, progress: bool = False) -> list[dict[str, Any]]:
    """Select n images per class with each strategy; return one row per strategy.

    ``progress`` shows a bar (on stderr) over every (strategy, class) selection.
    """
    from tqdm.auto import tqdm

    data = load_dataset(dataset)
    torch.manual_seed(seed)
    net = ConvNet(data.channels, data.num_classes, data.image_size, width=64)
    rows = []
    pools = data.class_indices()
    with torch.no_grad():
        feats_all = net.embed(data.train_images)
    bar = tqdm(total=len(strategies) * len(pools), desc="demo", unit="class", disable=not progress,
               file=sys.stderr, leave=False)
    try:
        for name in strategies:
            selector = Selector(Settings(strategy=name, seed=seed))
            cov, secs = [], 0.0
            bar.set_postfix_str(name)
            for c, pool in enumerate(pools):
                start = time.perf_counter()
                pos = selector.select(c, n, pool, lambda p, pool=pool: data.train_images[pool[p]], embed=net.embed,
                                      network=net, embed_source="net.embed")
                secs += time.perf_counter() - start
                cov.append(coverage(feats_all[pool], pos))
                bar.update(1)
            rows.append({"strategy": name, "n_per_class": n, "coverage": sum(cov) / len(cov), "seconds": secs})
    finally:
        bar.close()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["coverage"]
    lines = [f"{'strategy':<10} {'n/class':>7} {'coverage (mean sq. dist)':>25} {'vs first':>9} {'select s':>9}"]
    for r in rows:
        lines.append(f"{r['strategy']:<10} {r['n_per_class']:>7} {r['coverage']:>25.3f} {r['coverage'] / base:>9.3f} {r['seconds']:>9.2f}")
    return "\n".join(lines)
