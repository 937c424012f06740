"""Selection-speed benchmarks: our k-means vs the libraries users would pick, the embedding floor,
the overhead inside a DC iteration, and the peak memory of a selection.

    python -m benchmarks.run                 # everything (minutes on a 2-core CPU)
    python -m benchmarks.run --quick         # small sizes, one repeat (a smoke run)
    python -m benchmarks.run --sections engine,floor --repeats 5

Every section runs all contenders interleaved in ONE process (repeat r runs each contender once,
in turn), reports the median time over repeats and ratios to ours, and prints ``os.getloadavg()``
before and after: on a shared machine, compare ratios, not absolute seconds.
Inertia is recomputed by us for every contender the same way (float64 sum of squared distances
to the returned centroids).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from dream_plugin.clustering import kmeans, kmeans_batched, nearest_centroid, pad_problems
from dream_plugin.clustering.seeding import kmeans_plusplus
from dream_plugin.clustering.distances import row_sq_norms


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


# --------------------------------------------------------------------------- data
def blobs(n: int, d: int, centers: int, g: torch.Generator) -> torch.Tensor:
    cen = torch.randn(centers, d, generator=g) * 3.0
    return cen[torch.randint(centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def mnist_embeddings(width: int = 128, seed: int = 0) -> tuple[list[torch.Tensor], Any, Any]:
    """Per-class embeddings of the MNIST subset under a freshly initialised ConvNet."""
    from dream_plugin.data import load_dataset
    from dream_plugin.embedding import embed_images
    from dream_plugin.models import ConvNet

    ds = load_dataset("mnist")
    torch.manual_seed(seed)
    net = ConvNet(ds.channels, ds.num_classes, ds.image_size, width=width)
    feats = [
        embed_images(net.embed, ds.train_images[idx], network=net) for idx in ds.class_indices()
    ]
    return feats, ds, net


# --------------------------------------------------------------------------- engine contenders
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


def bench(fns: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[float]]:
    """Interleaved timing: each repeat runs every contender once, in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return times


def section_engine(args) -> list[dict]:
    print(f"\n## Clustering engine ({load()})")
    g = torch.Generator().manual_seed(0)
    if args.quick:
        n, d, ks = 2000, 256, (10, 64)
    else:
        n, d, ks = 5000, 2048, (10, 64, 128)
    sets: dict[str, torch.Tensor] = {}
    feats, _, _ = mnist_embeddings()
    sets[f"mnist-convnet class 0 ({feats[0].shape[0]}x{feats[0].shape[1]})"] = feats[0]
    sets[f"random-normal ({n}x{d})"] = torch.randn(n, d, generator=g)
    sets[f"blobs, 100 centres ({n}x{d})"] = blobs(n, d, 100, g)
    cons = contenders()
    rows = []
    for dname, x in sets.items():
        for k in ks:
            if k > x.shape[0]:
                continue
            cents: dict[str, list[float]] = {name: [] for name in cons}

            def runner(name, fn):
                def run(seed):
                    c = fn(x, k, seed)
                    cents[name].append(inertia64(x, c))
                return run

            # small problems (tens of ms) are the noisiest on a shared VM: 5x the repeats there
            reps = args.repeats * 5 if x.shape[0] <= 1000 else args.repeats
            t = bench({name: runner(name, fn) for name, fn in cons.items()}, reps)
            base_t = statistics.median(t["ours"])
            base_i = statistics.median(cents["ours"])
            print(f"\n### {dname}, K={k} ({load()})")
            print("| contender | median s | time / ours | inertia / ours |")
            print("|---|---:|---:|---:|")
            for name in cons:
                mt, mi = statistics.median(t[name]), statistics.median(cents[name])
                print(f"| {name} | {mt:.4f} | {mt / base_t:.2f} | {mi / base_i:.4f} |")
                rows.append({"data": dname, "K": k, "contender": name, "seconds": mt,
                             "time_ratio": mt / base_t, "inertia_ratio": mi / base_i})
            sys.stdout.flush()
    # all ten MNIST classes of one re-selection: a loop of per-class runs vs one batched run
    k = 64 if args.quick else 128
    xb, lens = pad_problems(feats)

    def per_class(seed):
        for i, f in enumerate(feats):
            kmeans(f, k, generator=torch.Generator().manual_seed(seed * 100 + i))

    def batched(seed):
        kmeans_batched(xb, k, lengths=lens, generators=[torch.Generator().manual_seed(seed * 100 + i) for i in range(len(feats))])

    fns = {"ours, loop over 10 classes": per_class, "ours, kmeans_batched (10 classes)": batched}
    if "fast-pytorch-kmeans (official use)" in cons:
        fo = cons["fast-pytorch-kmeans (official use)"]
        fns["fast-pytorch-kmeans (official use), loop over 10 classes"] = lambda seed: [fo(f, k, seed) for f in feats]
    t = bench(fns, args.repeats * 3)
    base = statistics.median(t["ours, loop over 10 classes"])
    print(f"\n### one re-selection of all 10 MNIST classes, K={k} ({load()})")
    print("| contender | median s | time / ours loop |")
    print("|---|---:|---:|")
    for name in fns:
        print(f"| {name} | {statistics.median(t[name]):.4f} | {statistics.median(t[name]) / base:.2f} |")
        rows.append({"data": "mnist 10 classes", "K": k, "contender": name, "seconds": statistics.median(t[name])})
    return rows


def section_seeding(args) -> list[dict]:
    """The three ways the greedy k-means++ seeding gets its distances, on the engine's data sets."""
    from dream_plugin.clustering.seeding import DEFAULT_SEEDING, SEEDING_METHODS, greedy_kmeans_plusplus

    print(f"\n## k-means++ seeding: direct vs pairwise vs blocked ({load()})")
    g = torch.Generator().manual_seed(0)
    n, d, ks = (2000, 256, (10, 64)) if args.quick else (5000, 2048, (10, 64, 128))
    feats, _, _ = mnist_embeddings()
    sets = {
        f"mnist-convnet class 0 ({feats[0].shape[0]}x{feats[0].shape[1]})": feats[0],
        f"random-normal ({n}x{d})": torch.randn(n, d, generator=g),
        f"blobs, 100 centres ({n}x{d})": blobs(n, d, 100, g),
    }
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


# --------------------------------------------------------------------------- selection helpers
def make_selector(strategy: str = "dream", **dream_options):
    from dream_plugin.config import Settings
    from dream_plugin.selector import Selector

    opts = {"dream": dream_options} if strategy == "dream" and dream_options else {}
    return Selector(Settings(strategy=strategy, options=opts))


def section_floor(args) -> list[dict]:
    """A full re-selection of one class vs the embedding pass it needs."""
    from dream_plugin.embedding import embed_images

    print(f"\n## Full re-selection of one class vs its embedding pass ({load()})")
    _, ds, net = mnist_embeddings()
    rows = []
    ns = (10, 64) if args.quick else (10, 128)
    idx = ds.class_indices()
    for c in (0,):
        pool = idx[c]
        images = ds.train_images

        def load_fn(positions, _p=pool):
            return images[_p[positions]]

        sel = make_selector("dream", interval=1, embedding_cache=False)
        fns = {"embedding pass (floor)": lambda r: embed_images(net.embed, load_fn, pool.numel(), network=net)}
        for n in ns:
            fns[f"full re-selection, n=K={n}"] = (
                lambda r, n=n: sel.select(c, n, pool, load_fn, embed=net.embed, network=net)
            )
        t = bench(fns, args.repeats + 2)
        base = statistics.median(t["embedding pass (floor)"])
        print(f"\n### MNIST class {c}: {pool.numel()} images, ConvNet width 128 ({load()})")
        print("| step | median s | / embedding pass |")
        print("|---|---:|---:|")
        for name in fns:
            m = statistics.median(t[name])
            print(f"| {name} | {m:.4f} | {m / base:.2f} |")
            rows.append({"step": name, "seconds": m, "ratio": m / base})
    return rows


# --------------------------------------------------------------------------- DC iteration
def _match_loss(gw_syn, gw_real):
    loss = 0.0
    for a, b in zip(gw_syn, gw_real):
        if a.dim() == 1:  # DC ignores biases ('ours' distance)
            continue
        a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        loss = loss + torch.sum(1 - torch.sum(a2 * b2, dim=-1) / (a2.norm(dim=-1) * b2.norm(dim=-1) + 1e-6))
    return loss


def section_dc(args) -> list[dict]:
    """DC-style gradient-matching outer iterations; selection time from the selector's records."""
    import numpy as np

    from dream_plugin.adapters.get_images import GetImagesAdapter
    from dream_plugin.data import load_dataset
    from dream_plugin.models import ConvNet

    print(f"\n## Selection inside a DC outer iteration ({load()})")
    ds = load_dataset("mnist")
    images_all = ds.train_images
    indices_class = [i.tolist() for i in ds.class_indices()]
    batch_real, ipc = (64, 1) if args.quick else (256, 10)
    iters = 4 if args.quick else 10
    rng = np.random.default_rng(0)

    def get_images(c, n):
        idx_shuffle = rng.permutation(indices_class[c])[:n]
        return images_all[idx_shuffle]

    rows = []
    arms = [("random (host get_images)", None), ("dream interval=1", 1), ("dream interval=10", 10)]
    for label, interval in arms:
        torch.manual_seed(0)
        net = ConvNet(1, 10, 28, width=128)
        syn = torch.randn(10 * ipc, 1, 28, 28, requires_grad=True)
        opt_img = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
        opt_net = torch.optim.SGD(net.parameters(), lr=0.01)
        params = list(net.parameters())
        if interval is None:
            sampler = get_images
            selector = None
        else:
            selector = make_selector("dream", interval=interval)
            sampler = GetImagesAdapter(get_images, images_all, indices_class, net=lambda: net, selector=selector,
                                       match_n=batch_real)
        crit = torch.nn.CrossEntropyLoss()
        t_iter = []
        for it in range(iters):
            t0 = time.perf_counter()
            loss = 0.0
            for c in range(10):
                img_real = sampler(c, batch_real)
                lab_real = torch.full((batch_real,), c)
                gw_real = [g.detach() for g in torch.autograd.grad(crit(net(img_real), lab_real), params)]
                img_syn = syn[c * ipc:(c + 1) * ipc]
                lab_syn = torch.full((ipc,), c)
                gw_syn = torch.autograd.grad(crit(net(img_syn), lab_syn), params, create_graph=True)
                loss = loss + _match_loss(gw_syn, gw_real)
            opt_img.zero_grad()
            loss.backward()
            opt_img.step()
            # inner loop: one network step on the synthetic set (DC's inner_loop=1 at ipc=1)
            opt_net.zero_grad()
            crit(net(syn.detach()), torch.arange(10).repeat_interleave(ipc)).backward()
            opt_net.step()
            t_iter.append(time.perf_counter() - t0)
        total = sum(t_iter)
        sel_s = sum(r.seconds for r in selector.records) if selector is not None else 0.0
        n_re = sum(1 for r in selector.records if r.reclustered) if selector is not None else 0
        share = sel_s / total
        print(f"| {label} | {iters} iterations | {total / iters:.3f} s/iter | selection {sel_s / iters:.3f} s/iter "
              f"| {n_re} re-clusterings | selection share {100 * share:.1f}% |  ({load()})")
        rows.append({"arm": label, "s_per_iter": total / iters, "selection_s_per_iter": sel_s / iters,
                     "share": share, "reclusterings": n_re})
        sys.stdout.flush()
    return rows


# --------------------------------------------------------------------------- memory
def _memory_child(mode: str) -> None:
    """Runs in a fresh interpreter: prints the peak-RSS increase (KiB) of one embedding or selection.

    Synthetic MNIST-shaped images keep the set-up's own peak low; the peak is reset through
    /proc/self/clear_refs (Linux) and read as VmHWM, else ru_maxrss deltas are used.
    """
    from dream_plugin.embedding import embed_images
    from dream_plugin.models import ConvNet

    torch.manual_seed(0)
    net = ConvNet(1, 10, 28, width=128)
    pool = torch.arange(400)
    images = torch.randn(400, 1, 28, 28)

    def load_fn(positions):
        return images[pool[positions]]

    with torch.no_grad():
        net.embed(images[:2])  # warm the allocator / kernels for a fair baseline
    x = torch.randn(5000, 2048, generator=torch.Generator().manual_seed(0)) if mode == "kmeans" else None
    before, how = _peak_reset()
    if mode == "embed":
        embed_images(net.embed, load_fn, pool.numel(), network=net)
    elif mode == "select":
        sel = make_selector("dream", interval=1)
        sel.select(0, 128, pool, load_fn, embed=net.embed, network=net)
    elif mode == "kmeans":
        kmeans(x, 128, generator=torch.Generator().manual_seed(0))
    after = _peak(how)
    print(json.dumps({"mode": mode, "delta_kib": after - before, "how": how}))


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_reset() -> tuple[int, str]:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        return _vm("VmHWM"), "VmHWM after clear_refs"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss delta"


def _peak(how: str) -> int:
    if how.startswith("VmHWM"):
        return _vm("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def section_memory(args) -> list[dict]:
    print(f"\n## Peak memory (ru_maxrss increase in a fresh subprocess, CPU; {load()})")
    print("| step | peak RSS increase |")
    print("|---|---:|")
    rows = []
    for mode, label in (("embed", "embedding pass, MNIST class (400 images)"),
                        ("select", "full re-selection, MNIST class, K=128"),
                        ("kmeans", "k-means 5000x2048 (40 MB input), K=128")):
        cmd = [sys.executable, "-m", "benchmarks.run", "--memory-child", mode]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd,
                             capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        d = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {d['delta_kib'] / 1024:.1f} MiB ({d['how']}) |")
        rows.append({"step": label, "mib": d["delta_kib"] / 1024})
    return rows


SECTIONS = {
    "engine": section_engine, "seeding": section_seeding, "floor": section_floor, "dc": section_dc,
    "memory": section_memory,
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="repeats per contender (default 3; quick: 1)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default: torch's)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        if args.threads:
            set_threads(args.threads)
        _memory_child(args.memory_child)
        return {}
    if args.threads:
        set_threads(args.threads)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    print(f"# dream-plugin selection benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; start {load()}")
    out = {}
    for name in args.sections.split(","):
        out[name] = SECTIONS[name.strip()](args)
    print(f"\n# end {load()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
