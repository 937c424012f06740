"""Run a diagnosis: per network, class, strategy and batch size, the batch-vs-pool gradient agreement,
and the per-sample loss / gradient-norm distributions of what each strategy picks."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dream_plugin.harness.ab.evaluate import accuracy
from dream_plugin.core.config import ConfigError, parse_settings
from dream_plugin.harness.data import ImageDataset, load_dataset
from dream_plugin.engine.embedding import embed_images, resolve_embedder
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector, derive_seed
from dream_plugin.harness.diagnose.config import DiagnoseConfig
from dream_plugin.harness.diagnose.gradients import batch_gradient_stats, per_sample_gradients
from dream_plugin.harness.diagnose.networks import build_network

logger = logging.getLogger(__name__)

METRICS = ("cosine", "rel_error", "l1_distance", "mse_distance", "dc_distance", "distance", "batch_norm", "pool_norm")


def _selectors(cfg: DiagnoseConfig) -> dict[str, Selector]:
    out = {}
    for name in cfg.strategies:
        if name == "random":
            continue
        data: dict[str, Any] = {"strategy": "dream" if name == "dream+" else name, "seed": cfg.seed}
        if name == "dream+":
            data["options"] = {"dream": {"subsample": cfg.subsample}}
        settings = parse_settings(data)
        out[name] = Selector(settings, plugin_manager=build_plugin_manager(settings.plugins))
    return out


def _identity(features: torch.Tensor) -> torch.Tensor:
    return features


def _mean_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([s[m] for s in stats])) for m in METRICS}


@dataclass
class _ClassPool:
    """One class's pool with its per-sample losses, gradients and features, computed once for every cell."""

    c: int
    pool: torch.Tensor
    losses: torch.Tensor
    grads: torch.Tensor
    layout: list[tuple[str, torch.Size]]
    feats: torch.Tensor
    metric: str

    def __post_init__(self) -> None:
        self.g_pool = self.grads.mean(0)
        self.norms = self.grads.norm(dim=1)
        self.size = int(self.pool.numel())

    def stats(self, positions: torch.Tensor) -> dict[str, float]:
        """Gradient agreement of the batch ``positions`` with the whole pool."""
        return batch_gradient_stats(self.grads, positions, self.layout, full=self.g_pool, metric=self.metric)

    def keep(self, samples: dict[str, dict[str, list[float]]], name: str, positions: torch.Tensor) -> None:
        """Add the picks' per-sample losses and gradient norms to ``samples[name]``."""
        slot = samples.setdefault(name, {"loss": [], "grad_norm": []})
        slot["loss"] += self.losses[positions].tolist()
        slot["grad_norm"] += self.norms[positions].tolist()


def check_sizes(cfg: DiagnoseConfig, data: ImageDataset) -> None:
    """Every batch size must fit the smallest class: a size above it has no batch to measure there.

    Raises :class:`~dream_plugin.core.config.ConfigError` naming the size and the class sizes."""
    counts = [int(p.numel()) for p in data.class_indices()]
    smallest = min(counts)
    too_big = [n for n in cfg.sizes if n > smallest]
    if too_big:
        c = counts.index(smallest)
        raise ConfigError(f"sizes (--sizes): {too_big[0]} is above the class size: class {c} of {data.name} has "
                          f"{smallest} training images (the smallest class); expected batch sizes between 1 and "
                          f"{smallest}")


def diagnose_network(
    spec: str, cfg: DiagnoseConfig, data: ImageDataset, device: torch.device,
    say: Callable[[str], None] = lambda _m: None, bar: Any = None,
) -> dict[str, Any]:
    """Every class x strategy x size for one network; per-sample distributions at the largest size.
    ``bar`` (a tqdm bar, or None) advances by one per class."""
    start = time.perf_counter()
    net = build_network(spec, cfg, data, device)
    embedder, _ = resolve_embedder(net)
    selectors = _selectors(cfg)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    for c, pool in enumerate(data.class_indices()):
        x = data.train_images[pool].to(device)
        y = data.train_labels[pool].to(device)
        losses, grads, layout = per_sample_gradients(net, x, y)
        seen = data.denormalize(x) if cfg.embed_input == "raw" else x
        feats = embed_images(embedder, seen, network=net)  # once per class: every strategy clusters these
        cp = _ClassPool(c, pool, losses, grads, layout, feats, cfg.metric)
        _diagnose_class(cp, cfg, selectors, device, cells, samples)
        if bar is not None:
            bar.update(1)
    rows = _rows(cells, cfg.strategies)
    dist = {name: {k: _summary(v) for k, v in d.items()} for name, d in samples.items()}
    acc = accuracy(net, data.test_images.to(device), data.test_labels.to(device))
    say(f"  network {spec}: test accuracy {100 * acc:.1f}% ({time.perf_counter() - start:.1f} s)")
    return {"network": spec, "test_accuracy": acc, "rows": rows, "comparisons": comparisons(rows, cfg.metric),
            "distributions": dist, "samples": samples,
            "histogram_n": max(cfg.sizes), "seconds": time.perf_counter() - start}


def _diagnose_class(cp: _ClassPool, cfg: DiagnoseConfig, selectors: dict[str, Selector], device: torch.device,
                    cells: dict[tuple[str, int], list[dict[str, Any]]],
                    samples: dict[str, dict[str, list[float]]]) -> None:
    """Add one class's cell of every (strategy, size) to ``cells``, and its picks at the largest size to ``samples``."""
    hist_n = max(cfg.sizes)
    cp.keep(samples, "pool", torch.arange(cp.size))
    for n in cfg.sizes:  # each fits the class: check_sizes refused larger ones before any work
        random_stats = _random_draws(cp, n, cfg, cells, samples)
        for name, sel in selectors.items():
            if name == "dream+" and n % cfg.subsample:
                continue
            # the pool's "images" are its precomputed features and embedding is the identity: the
            # strategies see exactly the features the network's embedder gives, computed once
            positions = sel.select(cp.c, n, cp.pool, lambda p, f=cp.feats: f[p.to(f.device)], kind="match",
                                   embed=_identity, device=device)
            st = cp.stats(positions)
            beaten = float(np.mean([r["cosine"] > st["cosine"] for r in random_stats]))
            closer = float(np.mean([r["distance"] < st["distance"] for r in random_stats]))
            vs_random = st["distance"] - float(np.mean([r["distance"] for r in random_stats]))
            cells.setdefault((name, n), []).append({"class": cp.c, **st, "random_better": beaten,
                                                    "random_closer": closer, "vs_random": vs_random})
            if n == hist_n:
                cp.keep(samples, name, positions)


def _random_draws(cp: _ClassPool, n: int, cfg: DiagnoseConfig, cells: dict[tuple[str, int], list[dict[str, Any]]],
                  samples: dict[str, dict[str, list[float]]]) -> list[dict[str, float]]:
    """The statistics of ``cfg.draws`` seeded random batches of ``n``; the random cell too when it is a strategy."""
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "diagnose-random", cp.c, n))
    draws = [torch.randperm(cp.size, generator=g)[:n] for _ in range(cfg.draws)]
    random_stats = [cp.stats(d) for d in draws]
    if "random" in cfg.strategies:
        cells.setdefault(("random", n), []).append(
            {"class": cp.c, **_mean_stats(random_stats),
             "cosine_sd": float(np.std([s["cosine"] for s in random_stats], ddof=1))})
        if n == max(cfg.sizes):
            cp.keep(samples, "random", draws[0])
    return random_stats


def _rows(cells: dict[tuple[str, int], list[dict[str, Any]]], strategies: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (strategy, size): every metric's mean over classes, sorted by size, then ``strategies`` order."""
    rows = []
    for (name, n), per_class in cells.items():
        row = {"strategy": name, "n": n, "classes": len(per_class),
               **{m: float(np.mean([p[m] for p in per_class])) for m in METRICS}, "per_class": per_class}
        if name == "random":
            row["cosine_sd_within_class"] = float(np.mean([p["cosine_sd"] for p in per_class]))
        else:
            for key in ("random_better", "random_closer", "vs_random"):
                row[key] = float(np.mean([p[key] for p in per_class]))
        rows.append(row)
    order = {s: i for i, s in enumerate(strategies)}
    rows.sort(key=lambda r: (r["n"], order[r["strategy"]]))
    return rows


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"count": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90))}


def comparisons(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per strategy and batch size: does it pick batches closer to the class gradient than random, by ``metric``?

    ``vs_random`` < 0: the strategy's batch gradient is nearer the pool's than random draws' on
    average. This describes the batches; it is not a forecast of an A/B result: against the regime
    map's A/B runs the sign was right in 4 of 8 cells, with misses both ways (docs/findings.md).
    """
    out = []
    for r in rows:
        if r["strategy"] == "random":
            continue
        out.append({"strategy": r["strategy"], "n": r["n"], "metric": metric, "vs_random": r["vs_random"],
                    "random_closer": r["random_closer"],
                    "closer_than_random": bool(r["vs_random"] < 0)})
    return out


def format_table(results: dict[str, Any]) -> str:
    """One block per network: strategies x batch sizes, mean over classes, then DREAM against random by the metric."""
    cfg = results["config"]
    metric = cfg["metric"]
    lines = [f"Gradient of the selected batch vs the whole class pool on {results['dataset']} "
             f"(mean over {results['classes']} classes; random: mean of {cfg['draws']} draws per class)"]
    dist = f"{metric} dist"
    head = (f"{'strategy':<9} {'n':>4} {'cosine':>8} {'rel err':>8} {dist:>10} {'vs random':>10} "
            f"{'|g batch|':>9} {'|g pool|':>8} {'random better':>13} {'random closer':>13}")
    for net in results["networks"]:
        lines += ["", f"network {net['network']} (test accuracy {100 * net['test_accuracy']:.1f}%)", head]
        for r in net["rows"]:
            if "random_better" in r:
                rb, rc, vs = (f"{100 * r['random_better']:.0f}%", f"{100 * r['random_closer']:.0f}%",
                              f"{r['vs_random']:+.3g}")
            else:
                rb, rc, vs = f"sd {r['cosine_sd_within_class']:.3f}", "", ""
            lines.append(f"{r['strategy']:<9} {r['n']:>4} {r['cosine']:>8.3f} {r['rel_error']:>8.3f} "
                         f"{r['distance']:>10.4g} {vs:>10} {r['batch_norm']:>9.3f} {r['pool_norm']:>8.3f} "
                         f"{rb:>13} {rc:>13}")
        d = net["distributions"]
        lines.append(f"per-sample at n={net['histogram_n']} (median loss / median gradient norm): "
                     + "; ".join(f"{k} {v['loss']['median']:.3f} / {v['grad_norm']['median']:.3f}" for k, v in d.items()))
        for p in net["comparisons"]:
            if p["strategy"] == "dream":
                lines.append(f"by {metric} at n={p['n']}: dream's batches are {'closer to' if p['closer_than_random'] else 'farther from'} "
                             f"the class gradient than random's ({p['vs_random']:+.3g})")
    lines.append("closer or farther does not forecast an A/B result: against the regime map's A/B runs the sign was right "
                 "in 4 of 8 cells, with misses both ways (docs/findings.md); an A/B run (dream-plugin ab) tells")
    lines.append(f"cosine and rel err (||g_batch - g_pool|| / ||g_pool||) of the flattened gradients; {metric} dist: the "
                 f"{metric} matching distance (l1 / mse: IDC's, over convolution weights; dc: DC's sum over output units of "
                 "1 - cosine); vs random: minus random draws' mean distance (negative: closer than random); random "
                 "better / closer: share of random draws with a higher cosine / a smaller distance; for random, sd is "
                 "the spread of the cosine across draws")
    return "\n".join(lines)


def save_plot(results: dict[str, Any], path: Path) -> None:
    """Cosine vs batch size per strategy, and per-sample gradient-norm histograms, one row per network."""
    from matplotlib.figure import Figure

    nets = results["networks"]
    colors = {name: f"C{i}" for i, name in enumerate(results["config"]["strategies"])}
    colors["pool"] = "0.3"
    fig = Figure(figsize=(11, 3.6 * len(nets)), dpi=110)
    axes = fig.subplots(len(nets), 2, squeeze=False)
    for row, net in zip(axes, nets):
        ax = row[0]
        for name in results["config"]["strategies"]:
            pts = [(r["n"], r["cosine"]) for r in net["rows"] if r["strategy"] == name]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name, color=colors[name])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size n")
        ax.set_ylabel("cosine(batch gradient, pool gradient)")
        ax.set_title(f"{net['network']} (test acc {100 * net['test_accuracy']:.1f}%)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = row[1]
        all_norms = np.concatenate([np.asarray(v["grad_norm"]) for v in net["samples"].values()])
        bins = np.linspace(0, float(np.percentile(all_norms, 99.5)) or 1.0, 40)
        for name, v in net["samples"].items():
            ax.hist(v["grad_norm"], bins=bins, density=True, histtype="step", label=name, color=colors[name],
                    linewidth=2.0 if name == "pool" else 1.2)
        ax.set_xlabel(f"per-sample gradient norm (picks at n={net['histogram_n']})")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _above(bar: Any, say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` printing above the progress bar instead of through it."""
    def write(message: str) -> None:
        if bar.disable:
            say(message)
        else:
            with bar.external_write_mode():
                say(message)
    return write


def run_diagnose(
    cfg: DiagnoseConfig, *, out: str | Path | None = None, write: bool = True,
    say: Callable[[str], None] | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Diagnose every configured network; write diagnose.json (first) and diagnose.png to ``out``.

    ``progress`` shows a bar on stderr over every (network, class); a batch size above the smallest
    class is refused before any work (:func:`check_sizes`)."""
    cfg.validate()
    from dream_plugin.harness.devices import resolve_device

    say = say or logger.info  # the command passes print; as a library, logging.getLogger('dream_plugin.harness.diagnose')

    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        data = load_dataset(cfg.dataset, root=cfg.root)
        check_sizes(cfg, data)
        say(f"dream-plugin diagnose on {data.name}: networks {', '.join(cfg.networks)}; strategies "
            f"{', '.join(cfg.strategies)}; sizes {list(cfg.sizes)}; {cfg.draws} random draws; device {device}")
        start = time.perf_counter()
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg.networks) * data.num_classes, desc="diagnose", unit="class",
                   disable=not progress, file=sys.stderr)
        try:
            nets = [diagnose_network(spec, cfg, data, device, _above(bar, say), bar) for spec in cfg.networks]
        finally:
            bar.close()
    finally:
        torch.set_num_threads(threads)
    import dataclasses

    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "dataset": data.name,
                               "classes": data.num_classes, "networks": nets,
                               "total_seconds": time.perf_counter() - start}
    results["table"] = format_table(results)
    if write:
        out_dir = Path(out or f"dream-diagnose-{time.strftime('%Y%m%d-%H%M%S')}")
        out_dir.mkdir(parents=True, exist_ok=True)
        public = {**results, "networks": [{k: v for k, v in n.items() if k != "samples"} for n in nets]}
        tmp = out_dir / "diagnose.json.tmp"
        tmp.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out_dir / "diagnose.json")
        save_plot(results, out_dir / "diagnose.png")
        results["out"] = str(out_dir)
    return results
