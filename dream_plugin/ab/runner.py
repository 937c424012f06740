"""Run the A/B experiment: every arm x every seed, with identical seeds except the selection itself.

At the start of each (arm, seed) run torch, numpy and python ``random`` are seeded identically,
and everything random besides the selection comes from explicit per-purpose seeds (see
:mod:`dream_plugin.ab.loops`). The random arm samples exactly as a host does (numpy's global
generator, through the adapter's pass-through to the host's ``get_images``); the other arms select
through a fresh :class:`~dream_plugin.selector.Selector` that keeps its own generators, so the
arms diverge only through what is selected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import ImageDataset, load_dataset
from ..hookspecs import hookimpl
from ..manager import build_plugin_manager
from ..requests import SelectionRecord
from ..selector import Selector, derive_seed
from .config import AbConfig, ConfigError
from ..mosaic import mosaic
from .evaluate import accuracy, evaluate_synset
from .aggregate import _share, _speedup, aggregate  # noqa: F401 - _speedup re-exported
from .environment import _loadavg, environment
from .loops import LiveNet, LoopContext, distill, host_get_images, seeded_net
from .output import prepare_out_dir, write_report
from ..extras import require

logger = logging.getLogger("dream_plugin.ab")

OBSERVER_NAME = "dream_plugin.ab.observer"


class SelectionObserver:
    """A ``selection_done`` plugin that keeps every :class:`SelectionRecord` of one run."""

    def __init__(self) -> None:
        self.records: list[SelectionRecord] = []

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        self.records.append(record)


@dataclass
class RunResult:
    """One (arm, seed) run."""

    arm: str
    seed: int
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"iteration", "accs"}
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0
    sample_seconds: float = 0.0
    select_seconds: float = 0.0
    selections: int = 0
    reclusterings: int = 0
    init_select_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)  # idc: {"iteration", "moment", "acc"}
    synthetic: torch.Tensor | None = None

    @property
    def distill_seconds(self) -> float:
        return max(0.0, self.wall_seconds - self.eval_seconds)

    def as_dict(self) -> dict[str, Any]:
        d = self.distill_seconds
        return {
            "arm": self.arm,
            "seed": self.seed,
            "curve": self.curve,
            "wall_seconds": self.wall_seconds,
            "distill_seconds": d,
            "eval_seconds": self.eval_seconds,
            "sample_seconds": self.sample_seconds,
            "select_seconds": self.select_seconds,
            "init_select_seconds": self.init_select_seconds,
            "select_share": _share(self.select_seconds, d),
            "sample_share": _share(self.sample_seconds, d),
            "selections": self.selections,
            "reclusterings": self.reclusterings,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
            "matching_network": self.live,
        }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device (--device): {name!r} was asked for but CUDA is not available here; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device (--device): 'mps' was asked for but is not available here; use cpu or auto")
    return torch.device(name)


def load_data(cfg: AbConfig) -> ImageDataset:
    try:
        return load_dataset(cfg.dataset, root=cfg.root)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"dataset (--dataset) {cfg.dataset!r}: {exc}") from exc


def check_sizes(cfg: AbConfig, data: ImageDataset) -> None:
    sizes = [int(p.numel()) for p in data.class_indices()]
    smallest = min(sizes)
    cls = sizes.index(smallest)
    if cfg.ipc > smallest:
        raise ConfigError(f"ipc (--ipc): {cfg.ipc} exceeds the {smallest} training images of class {cls} in "
                          f"{data.name}; choose at most {smallest}")
    if cfg.decoded_ipc > smallest:
        raise ConfigError(f"ipc (--ipc) x idc.factor**2 = {cfg.decoded_ipc} initialisation picks exceed the {smallest} "
                          f"training images of class {cls} in {data.name}; lower --ipc or --factor")
    if cfg.method == "idc" and cfg.idc.factor > data.image_size:
        raise ConfigError(f"idc.factor (--factor): {cfg.idc.factor} exceeds the {data.image_size}-pixel side of "
                          f"{data.name}'s images")
    if cfg.batch_real > smallest:
        raise ConfigError(f"batch_real (--batch-real): {cfg.batch_real} exceeds the {smallest} training images of "
                          f"class {cls} in {data.name}; choose at most {smallest}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def default_adapter_class() -> type:
    from dream_plugin.adapters.get_images import GetImagesAdapter

    return GetImagesAdapter


def run_arm(
    arm: str,
    seed: int,
    cfg: AbConfig,
    data: ImageDataset,
    device: torch.device,
    *,
    adapter_class: type | None = None,
    tensors: dict[str, Any] | None = None,
    position: int = 0,
) -> RunResult:
    """Distil with one arm and one seed; evaluate at ``cfg.eval_iterations``."""
    adapter_class = adapter_class or default_adapter_class()
    t = tensors or _device_tensors(data, device)
    result = RunResult(arm=arm, seed=seed)
    start = time.perf_counter()
    seed_everything(seed)
    selector, observer = _observed_selector(cfg, arm, seed)
    shape = (data.channels, data.num_classes, data.image_size)

    def make_net(s: int) -> torch.nn.Module:
        return seeded_net(cfg, *shape, s, device)

    live = LiveNet()
    adapter = adapter_class(
        host_get_images(t["images_all"], t["indices_class"]),
        t["images_all"],
        t["indices_class"],
        net=lambda: live.net,
        net_factory=lambda: make_net(derive_seed(seed, "init-embed-net")),
        selector=selector,
    )

    def on_eval(it: int, x: torch.Tensor, y: torch.Tensor) -> None:
        accs = evaluate_synset(x, y, t["test_x"], t["test_y"], cfg, make_net, seed, it)
        result.curve.append({"iteration": it, "accs": accs})
        if bar is not None:
            bar.set_postfix_str(f"it {it}: acc {np.mean(accs):.4f}")

    def on_live(it: int, moment: str, net: torch.nn.Module) -> None:
        result.live.append({"iteration": it, "moment": moment, "acc": accuracy(net, t["test_x"], t["test_y"])})

    bar = _progress_bar(cfg, arm, seed, position)
    ctx = LoopContext(cfg=cfg, sampler=adapter, live=live, make_net=make_net, num_classes=data.num_classes,
                      seed=seed, device=device, on_eval=on_eval, progress=bar,
                      train_x=t["images_all"], train_y=t["train_y"], on_live=on_live,
                      new_round=lambda: restart_interval(selector), pixel_range=pixel_range(data, device))
    syn, labels = _initial_synset(cfg, data, ctx, seed, device)
    try:
        final = distill(syn, labels, ctx)
    finally:
        bar.close()
        selector.pm.unregister(observer)
    result.wall_seconds = time.perf_counter() - start
    _record_run(result, ctx, observer.records, final)
    return result


def _observed_selector(cfg: AbConfig, arm: str, seed: int) -> tuple[Selector, SelectionObserver]:
    """The arm's selector with a :class:`SelectionObserver` registered on it."""
    settings = cfg.arm_settings(arm, seed)
    # a plugin manager of this run's own: the observer sees only this run, and nothing leaks between runs
    selector = Selector(settings, plugin_manager=build_plugin_manager(settings.plugins))
    observer = SelectionObserver()
    selector.pm.register(observer, name=OBSERVER_NAME)
    return selector, observer


def _progress_bar(cfg: AbConfig, arm: str, seed: int, position: int) -> Any:
    """The run's tqdm bar over ``cfg.iterations`` (disabled unless ``cfg.progress``)."""
    from tqdm.auto import tqdm

    return tqdm(total=cfg.iterations, desc=f"{arm} (seed {seed})", leave=False, disable=not cfg.progress,
                position=position, dynamic_ncols=True)


def _initial_synset(cfg: AbConfig, data: ImageDataset, ctx: LoopContext, seed: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(synthetic images, their labels)`` before distillation: real picks (``init='real'``) or noise."""
    labels = torch.arange(data.num_classes, device=device).repeat_interleave(cfg.ipc)
    syn = torch.empty((data.num_classes * cfg.ipc, data.channels, data.image_size, data.image_size), device=device)
    if cfg.init == "real":
        factor = cfg.idc.factor if cfg.method == "idc" else 1
        for c in range(data.num_classes):
            picks = ctx.real(c, cfg.decoded_ipc, "init").detach()
            syn[c * cfg.ipc:(c + 1) * cfg.ipc] = mosaic(picks, factor)  # IDC's "mix" init (a copy when factor 1)
    else:
        g = torch.Generator().manual_seed(derive_seed(seed, "syn-noise"))
        syn.copy_(torch.randn(syn.shape, generator=g))
    return syn, labels


def _record_run(result: RunResult, ctx: LoopContext, records: list[SelectionRecord], final: torch.Tensor) -> None:
    """Copy the loop's timings and losses, the selection totals and the final synthetic set into ``result``."""
    result.eval_seconds = ctx.eval_seconds
    result.sample_seconds = ctx.sample_seconds
    result.losses = ctx.losses
    result.select_seconds = float(sum(r.seconds for r in records))
    result.init_select_seconds = float(sum(r.seconds for r in records if r.kind == "init"))
    result.selections = len(records)
    result.reclusterings = sum(1 for r in records if r.reclustered)
    result.synthetic = final.cpu()


def restart_interval(selector: Selector) -> None:
    """Restart the re-clustering count of the matching strategy, so its next call clusters afresh.

    The idc loop calls this when a round begins (DREAM counts ``interval`` on the inner-step counter,
    which restarts every outer iteration). Strategies without a cache have nothing to restart.
    """
    name = selector.strategy_name("match")
    if name == "host":
        return
    reset = getattr(selector.strategy(name), "reset", None)
    if callable(reset):
        reset()


def pixel_range(data: ImageDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds of normalised images whose raw pixels lie in [0, 1]."""
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def _device_tensors(data: ImageDataset, device: torch.device) -> dict[str, Any]:
    return {
        "images_all": data.train_images.to(device),
        "train_y": data.train_labels.to(device),
        "indices_class": [p.tolist() for p in data.class_indices()],
        "test_x": data.test_images.to(device),
        "test_y": data.test_labels.to(device),
    }


def _worker(cfg: AbConfig, arm: str, seed: int, adapter_class: type | None) -> RunResult:
    """One (arm, seed) run in a worker process: its own data, device and thread setting."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    return run_arm(arm, seed, cfg, load_data(cfg), device, adapter_class=adapter_class)


def _run_parallel(cfg: AbConfig, jobs: list[tuple[str, int]], adapter_class: type | None,
                  done: Callable[[RunResult], None]) -> None:
    """Run ``jobs`` in ``cfg.jobs`` spawned processes (no progress bars); ``done`` gets each result."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    quiet = dataclasses.replace(cfg, progress=False)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_worker, quiet, arm, seed, adapter_class) for arm, seed in jobs]
        for fut in as_completed(futures):
            done(fut.result())


def run_ab(
    cfg: AbConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    adapter_class: type | None = None,
    write: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run every arm over every seed; write results.json, curves.png and synthetic grids to ``out``.

    ``out`` is checked before any work (see :func:`~dream_plugin.ab.output.prepare_out_dir`; ``force``
    replaces an earlier run there), and results.json is written before the plots.
    """
    from .report import format_table, save_curves, save_grids

    cfg.validate()
    if write:
        require("matplotlib", what="dream-plugin ab (its plots)")
        out = prepare_out_dir(out or cfg.out or f"dream-ab-{time.strftime('%Y%m%d-%H%M%S')}", force=force)
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_ab(cfg, out=out, adapter_class=adapter_class, write=write, log=log)
    finally:
        torch.set_num_threads(threads_before)


def _run_ab(
    cfg: AbConfig,
    *,
    out: str | os.PathLike[str] | None,
    adapter_class: type | None,
    write: bool,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    from .report import format_table

    device = resolve_device(cfg.device)
    data = load_data(cfg)
    check_sizes(cfg, data)
    adapter_class = adapter_class or default_adapter_class()
    tensors = _device_tensors(data, device)
    env = environment(device)
    out_dir = Path(out or cfg.out or f"dream-ab-{time.strftime('%Y%m%d-%H%M%S')}")
    say = log or logger.info  # the command passes print; as a library, logging.getLogger('dream_plugin.ab')
    say(f"dream-plugin ab: {cfg.method} on {data.name} ({data.num_classes} classes, "
        f"{data.train_images.shape[0]} train / {data.test_images.shape[0]} test), ipc {cfg.ipc}, "
        f"{cfg.iterations} iterations, arms {', '.join(cfg.arms)}, seeds {cfg.seed_list}, "
        f"{cfg.eval.nets} eval nets at {cfg.eval_iterations}; device {device}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    runs = _run_jobs(cfg, data, device, adapter_class, tensors, say)
    total = time.perf_counter() - start
    env["load_average_at_end"] = _loadavg()
    results = _results(cfg, data, env, total, aggregate(cfg, runs))
    table = format_table(results)
    results["table"] = table
    say("")
    say(table)  # before any file is written: if writing fails, the numbers are still on screen
    if write:
        _write_outputs(results, runs, cfg, data, out_dir)
        say(f"\nwrote {out_dir}/results.json, curves.png, " + ", ".join(f"synthetic_{a}.png" for a in cfg.arms)
            + f" (total {total:.1f} s)")
    return results


def _run_jobs(cfg: AbConfig, data: ImageDataset, device: torch.device, adapter_class: type,
              tensors: dict[str, Any], say: Callable[[str], None]) -> list[RunResult]:
    """Every (arm, seed) run, in processes when ``cfg.jobs > 1``; logged as each ends, returned in job order."""
    runs: list[RunResult] = []

    def done(r: RunResult) -> None:
        say(f"  {r.arm:<11} seed {r.seed}: final acc {np.mean(r.curve[-1]['accs']):.4f} "
            f"({r.wall_seconds:.1f} s, selection {r.select_seconds:.1f} s)")
        runs.append(r)

    jobs = [(arm, seed) for seed in cfg.seed_list for arm in cfg.arms]
    if cfg.jobs > 1 and len(jobs) > 1:
        _run_parallel(cfg, jobs, adapter_class, done)
    else:
        for arm, seed in jobs:
            done(run_arm(arm, seed, cfg, data, device, adapter_class=adapter_class, tensors=tensors))
    order = {job: i for i, job in enumerate(jobs)}
    runs.sort(key=lambda r: order[(r.arm, r.seed)])
    return runs


def _results(cfg: AbConfig, data: ImageDataset, env: dict[str, Any], total: float,
             summary: dict[str, Any]) -> dict[str, Any]:
    """The results.json content: configuration, resolved settings, environment, total time and the summary."""
    return {
        "config": cfg.to_dict(),
        "resolved": {"lr_img": cfg.image_lr, "eval_augment": cfg.augment_eval, "seeds": cfg.seed_list,
                     "dataset_name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                     "channels": data.channels, "train_images": int(data.train_images.shape[0]),
                     "test_images": int(data.test_images.shape[0]),
                     "std_note": "std over all evaluation networks of all seeds (numpy std, ddof=0)"},
        "environment": env,
        "total_seconds": total,
        **summary,
    }


def _write_outputs(results: dict[str, Any], runs: list[RunResult], cfg: AbConfig, data: ImageDataset,
                   out_dir: Path) -> None:
    """results.json, then the curves and the first seed's synthetic grids (see :func:`write_report`)."""
    from .report import save_curves, save_grids

    def plots() -> dict[str, str]:
        save_curves(results, out_dir / "curves.png")
        first = {r.arm: r.synthetic for r in runs if r.seed == cfg.seed_list[0]}
        return {"curves": "curves.png", **save_grids(first, data, cfg.ipc, out_dir)}

    write_report(results, out_dir, plots)
