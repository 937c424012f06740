"""Child process of :mod:`benchmarks.compare_engine`: times the ``ours`` rows of the engine section
with whatever ``dream_plugin`` its ``PYTHONPATH`` finds (this checkout or another one).

    python benchmarks/engine_rows_child.py DATA.pt OUT.json REPEATS

It imports only torch and dream_plugin's public clustering API, so it runs against older
checkouts too; the data come from the parent, so both sides cluster the same tensors.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

VARIANTS = {"ours": {}, "ours (k-means++-sampled)": {"init": "k-means++-sampled"},
            "ours (n_local_trials=1)": {"n_local_trials": 1}}


def _timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each ``fn(seed)``, interleaved: repeat r runs every function once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def main(data_path: str, out_path: str, repeats: int) -> None:
    import dream_plugin
    from dream_plugin.engine.clustering import kmeans, kmeans_batched, pad_problems

    data = torch.load(data_path)
    rows: dict[str, float] = {}
    for name, x in data["sets"].items():
        for k in data["ks"]:
            fns = {f"{name} K={k} {v}": (lambda seed, kw=kw, k=k, x=x: kmeans(
                x, k, generator=torch.Generator().manual_seed(seed), **kw)) for v, kw in VARIANTS.items()}
            rows.update(_timed(fns, repeats * 5 if x.shape[0] <= 1000 else repeats))
    feats, k = data["feats"], data["ten_class_k"]
    xb, lens = pad_problems(feats)
    ten = {
        f"mnist 10 classes K={k} ours, loop": lambda seed: [
            kmeans(f, k, generator=torch.Generator().manual_seed(seed * 100 + i)) for i, f in enumerate(feats)],
        f"mnist 10 classes K={k} ours, kmeans_batched": lambda seed: kmeans_batched(
            xb, k, lengths=lens, generators=[torch.Generator().manual_seed(seed * 100 + i) for i in range(len(feats))]),
    }
    rows.update(_timed(ten, repeats * 3))
    with open(out_path, "w") as fh:
        json.dump({"dream_plugin": dream_plugin.__file__, "torch_threads": torch.get_num_threads(), "rows": rows}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
