"""The clustering engine against the libraries users would pick, and the three seeding methods."""

from __future__ import annotations

import statistics
import sys
from typing import Callable

import torch

from dream_plugin.engine.clustering import kmeans, kmeans_batched, pad_problems
from dream_plugin.engine.clustering.distances import row_sq_norms
from dream_plugin.engine.clustering.seeding import kmeans_plusplus

from .common import bench, engine_data_sets, inertia64, load


def contenders(include_fpk_ours_init: bool = True) -> dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]]:
    """name -> fn(x, K, seed) returning centroids."""
    out: dict[str, Callable] = {}

    def ours(x, k, seed):
        return kmeans(x, k, generator=torch.Generator().manual_seed(seed)).centroids

    def ours_sampled(x, k, seed):
        return kmeans(x, k, init="k-means++-sampled", generator=torch.Generator().manual_seed(seed)).centroids

    def ours_classic(x, k, seed):
        return kmeans(x, k, n_local_trials=1, generator=torch.Generator().manual_seed(seed)).centroids

    out["ours"] = ours
    out["ours (k-means++-sampled)"] = ours_sampled
    out["ours (n_local_trials=1)"] = ours_classic
    out.update(_fpk_contenders(include_fpk_ours_init))
    out.update(_library_contenders())
    return out


def _fpk_contenders(include_fpk_ours_init: bool) -> dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]]:
    """fast-pytorch-kmeans as the official DREAM code calls it, and from our k-means++ seeds."""
    out: dict[str, Callable] = {}
    try:
        import fast_pytorch_kmeans as fpk

        def fpk_official(x, k, seed):
            # exactly as the official DREAM code: its own defaults and random init, global seed
            torch.manual_seed(seed)
            km = fpk.KMeans(n_clusters=k, mode="euclidean")
            km.fit(x)
            return km.centroids

        def fpk_our_init(x, k, seed):
            c0 = kmeans_plusplus(x, row_sq_norms(x), k, torch.Generator().manual_seed(seed))
            km = fpk.KMeans(n_clusters=k, mode="euclidean")
            km.fit(x, centroids=c0)
            return km.centroids

        out["fast-pytorch-kmeans (official use)"] = fpk_official
        if include_fpk_ours_init:
            out["fast-pytorch-kmeans (our k-means++ init)"] = fpk_our_init
    except ImportError:
        print("# fast-pytorch-kmeans not installed: skipped")
    return out


def _library_contenders() -> dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]]:
    """scikit-learn and faiss-cpu, those installed."""
    out: dict[str, Callable] = {}
    try:
        from sklearn.cluster import KMeans as SKKMeans

        def sk(x, k, seed):
            est = SKKMeans(n_clusters=k, n_init=1, init="k-means++", random_state=seed, algorithm="lloyd")
            est.fit(x.numpy())
            return torch.from_numpy(est.cluster_centers_)

        out["scikit-learn (n_init=1, k-means++)"] = sk
    except ImportError:
        print("# scikit-learn not installed: skipped")
    try:
        import faiss

        def fa(x, k, seed):
            n, d = x.shape
            km = faiss.Kmeans(d, k, seed=seed, verbose=False, max_points_per_centroid=n, min_points_per_centroid=1)
            km.train(x.numpy())
            return torch.from_numpy(km.centroids.copy())

        out["faiss-cpu (defaults, no subsampling)"] = fa
    except ImportError:
        print("# faiss not installed: skipped")
    return out


def _engine_rows(dname: str, x: torch.Tensor, k: int, cons: dict[str, Callable], repeats: int) -> list[dict]:
    """Time and inertia of every contender on one data set and K, printed as a table."""
    cents: dict[str, list[float]] = {name: [] for name in cons}

    def runner(name, fn):
        def run(seed):
            cents[name].append(inertia64(x, fn(x, k, seed)))
        return run

    # small problems (a few ms) are the noisiest on a shared machine: 5x the repeats there
    reps = repeats * 5 if x.shape[0] <= 1000 else repeats
    t = bench({name: runner(name, fn) for name, fn in cons.items()}, reps)
    base_t, base_i = statistics.median(t["ours"]), statistics.median(cents["ours"])
    print(f"\n### {dname}, K={k} ({load()})")
    print("| contender | median s | time / ours | inertia / ours |")
    print("|---|---:|---:|---:|")
    rows = []
    for name in cons:
        mt, mi = statistics.median(t[name]), statistics.median(cents[name])
        print(f"| {name} | {mt:.4f} | {mt / base_t:.2f} | {mi / base_i:.4f} |")
        rows.append({"data": dname, "K": k, "contender": name, "seconds": mt,
                     "time_ratio": mt / base_t, "inertia_ratio": mi / base_i})
    sys.stdout.flush()
    return rows


def _ten_class_contenders(feats: list[torch.Tensor], k: int) -> dict[str, Callable[[int], object]]:
    """One re-selection of all ten MNIST classes: a loop of per-class runs vs one batched run."""
    xb, lens = pad_problems(feats)

    def per_class(seed):
        for i, f in enumerate(feats):
            kmeans(f, k, generator=torch.Generator().manual_seed(seed * 100 + i))

    def batched(seed):
        kmeans_batched(xb, k, lengths=lens,
                       generators=[torch.Generator().manual_seed(seed * 100 + i) for i in range(len(feats))])

    return {"ours, loop over 10 classes": per_class, "ours, kmeans_batched (10 classes)": batched}


def _ten_class_rows(feats: list[torch.Tensor], k: int, cons: dict[str, Callable], repeats: int) -> list[dict]:
    fns = _ten_class_contenders(feats, k)
    if "fast-pytorch-kmeans (official use)" in cons:
        fo = cons["fast-pytorch-kmeans (official use)"]
        fns["fast-pytorch-kmeans (official use), loop over 10 classes"] = lambda seed: [fo(f, k, seed) for f in feats]
    t = bench(fns, repeats * 3)
    base = statistics.median(t["ours, loop over 10 classes"])
    print(f"\n### one re-selection of all 10 MNIST classes, K={k} ({load()})")
    print("| contender | median s | time / ours loop |")
    print("|---|---:|---:|")
    rows = []
    for name in fns:
        print(f"| {name} | {statistics.median(t[name]):.4f} | {statistics.median(t[name]) / base:.2f} |")
        rows.append({"data": "mnist 10 classes", "K": k, "contender": name, "seconds": statistics.median(t[name])})
    return rows


def section_engine(args) -> list[dict]:
    """Our k-means against fast-pytorch-kmeans, scikit-learn and faiss (those installed)."""
    print(f"\n## Clustering engine ({load()})")
    sets, ks, feats = engine_data_sets(args.quick)
    cons = contenders()
    rows = [r for dname, x in sets.items() for k in ks if k <= x.shape[0]
            for r in _engine_rows(dname, x, k, cons, args.repeats)]
    return rows + _ten_class_rows(feats, 64 if args.quick else 128, cons, args.repeats)


def section_seeding(args) -> list[dict]:
    """The three ways the greedy k-means++ seeding gets its distances, on the engine's data sets."""
    from dream_plugin.engine.clustering.seeding import DEFAULT_SEEDING, SEEDING_METHODS, greedy_kmeans_plusplus

    print(f"\n## k-means++ seeding: direct vs pairwise vs blocked ({load()})")
    sets, ks, _ = engine_data_sets(args.quick)
    methods = list(SEEDING_METHODS)
    rows = []
    print("| data | K | default | " + " | ".join(f"{m}: median s / mean potential" for m in methods) + " |")
    print("|---|---:|---|" + "---|" * len(methods))
    for dname, x in sets.items():
        x_sq = row_sq_norms(x)
        for k in ks:
            pots: dict[str, list[float]] = {m: [] for m in methods}

            def runner(m):
                def run(seed):
                    idx = greedy_kmeans_plusplus(x[None], x_sq[None], k, [torch.Generator().manual_seed(seed)], method=m)[0]
                    pots[m].append(inertia64(x, x[idx]))
                return run

            t = bench({m: runner(m) for m in methods}, args.repeats)
            cells = [f"{statistics.median(t[m]):.4f} / {statistics.mean(pots[m]):.5g}" for m in methods]
            print(f"| {dname} | {k} | {DEFAULT_SEEDING} | " + " | ".join(cells) + " |")
            for m in methods:
                rows.append({"data": dname, "K": k, "method": m, "seconds": statistics.median(t[m]),
                             "mean_potential": statistics.mean(pots[m])})
            sys.stdout.flush()
    return rows
