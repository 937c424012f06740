"""One (arm, seed) run of the A/B experiment, with identical seeds except the selection itself.

At the start of each (arm, seed) run torch, numpy and python ``random`` are seeded identically,
and everything random besides the selection comes from explicit per-purpose seeds (see
:mod:`dream_plugin.harness.ab.loops`). The random arm samples exactly as a host does (numpy's global
generator, through the adapter's pass-through to the host's ``get_images``); the other arms select
through a fresh :class:`~dream_plugin.core.selector.Selector` that keeps its own generators, so the
arms diverge only through what is selected.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from dream_plugin.harness.data import ImageDataset
from dream_plugin.core.hookspecs import hookimpl
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.harness.mosaic import mosaic
from dream_plugin.core.requests import SelectionRecord
from dream_plugin.core.selector import Selector, derive_seed
from dream_plugin.harness.ab.aggregate import share
from dream_plugin.harness.ab.cache import EvalCache, NetworkCache, dataset_digest, eval_key, trajectory_key
from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.evaluate import accuracy, evaluate_synset
from dream_plugin.harness.ab.loops import LiveNet, LoopContext, distill, host_get_images, seeded_net
from dream_plugin.harness.ab.runstate import RunStore, random_states, set_random_states
from dream_plugin.harness.ab.validity import NonFiniteError

OBSERVER_NAME = "dream_plugin.harness.ab.observer"


class SelectionObserver:
    """A ``selection_done`` plugin that sums the :class:`SelectionRecord` of one run (memory stays flat)."""

    def __init__(self) -> None:
        self.select_seconds = 0.0
        self.init_select_seconds = 0.0
        self.selections = 0
        self.reclusterings = 0

    @hookimpl
    def selection_done(self, record: SelectionRecord) -> None:
        self.select_seconds += record.seconds
        if record.kind == "init":
            self.init_select_seconds += record.seconds
        self.selections += 1
        self.reclusterings += int(bool(record.reclustered))

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


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
            "select_share": share(self.select_seconds, d),
            "sample_share": share(self.sample_seconds, d),
            "selections": self.selections,
            "reclusterings": self.reclusterings,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
            "matching_network": self.live,
        }


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
    store: RunStore | None = None,
) -> RunResult:
    """Distil with one arm and one seed; evaluate at ``cfg.eval_iterations``.

    With ``store`` the run saves its state at every evaluation point and its result at the end, and
    continues from a state saved there by an interrupted run (see :mod:`~dream_plugin.harness.ab.runstate`).
    """
    adapter_class = adapter_class or default_adapter_class()
    t = tensors or device_tensors(data, device)
    result = RunResult(arm=arm, seed=seed)
    start = time.perf_counter()
    seed_everything(seed)
    selector, observer = _observed_selector(cfg, arm, seed)
    shape = (data.channels, data.num_classes, data.image_size)

    def make_net(s: int) -> torch.nn.Module:
        return seeded_net(cfg, *shape, s, device)

    live = LiveNet()
    adapter = _host_adapter(adapter_class, t, live, selector, lambda: make_net(derive_seed(seed, "init-embed-net")))

    network_cache, eval_cache = _caches(cfg, t, seed, device)

    def on_eval(it: int, x: torch.Tensor, y: torch.Tensor) -> None:
        accs = eval_cache.get(x, y, it) if eval_cache is not None else None
        if accs is None:
            accs = evaluate_synset(x, y, t["test_x"], t["test_y"], cfg, make_net, seed, it)
            if eval_cache is not None:
                eval_cache.put(x, y, it, accs)
        result.curve.append({"iteration": it, "accs": accs})
        if bar is not None:
            bar.set_postfix_str(f"it {it}: acc {np.mean(accs):.4f}")

    def on_live(it: int, moment: str, net: torch.nn.Module) -> None:
        result.live.append({"iteration": it, "moment": moment, "acc": accuracy(net, t["test_x"], t["test_y"])})

    bar = _progress_bar(cfg, arm, seed, position)
    ctx = LoopContext(cfg=cfg, sampler=adapter, live=live, make_net=make_net, num_classes=data.num_classes,
                      seed=seed, device=device, on_eval=on_eval, progress=bar,
                      train_x=t["images_all"], train_y=t["train_y"], on_live=on_live,
                      new_round=lambda: restart_interval(selector), pixel_range=pixel_range(data, device),
                      network_cache=network_cache)
    saved = store.load_state() if store is not None else None
    if saved is None:
        syn, labels = _initial_synset(cfg, data, ctx, seed, device)
    else:
        syn, labels = _restore(saved, ctx, result, selector, observer, device)
        start -= saved["elapsed"]
        bar.update(saved["iteration"])
    if store is not None:
        def on_checkpoint(it: int, x: torch.Tensor, opt_img: torch.optim.Optimizer) -> None:
            store.save_state(_capture(it, x, opt_img, ctx, result, selector, observer,
                                      time.perf_counter() - start))

        ctx.on_checkpoint = on_checkpoint
    try:
        final = distill(syn, labels, ctx)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{arm} arm, seed {seed}: {exc}") from None
    finally:
        bar.close()
        selector.pm.unregister(observer)
    result.wall_seconds = time.perf_counter() - start
    _record_run(result, ctx, observer, final)
    if store is not None:
        store.save_result(result)
    return result


def _caches(cfg: AbConfig, t: dict[str, Any], seed: int, device: torch.device) -> tuple[NetworkCache | None, EvalCache | None]:
    """This seed's caches (``cfg.cache``): the loop's matching-network trajectory where it has one that every
    arm shares (idc; none for networks with running statistics, whose trajectory depends on the arm)
    and the evaluations."""
    if cfg.cache is None:
        return None, None
    dataset = dataset_digest(cfg.dataset, cfg.root, {k: t[k] for k in ("images_all", "train_y", "test_x", "test_y")})
    evals = EvalCache(cfg.cache, eval_key(cfg, dataset, seed, device))
    if cfg.loop.network_key is None or cfg.model.norm == "batchnorm":
        return None, evals
    return NetworkCache(cfg.cache, trajectory_key(cfg, dataset, seed, device)), evals


def _capture(it: int, syn: torch.Tensor, opt_img: torch.optim.Optimizer, ctx: LoopContext, result: RunResult,
             selector: Selector, observer: SelectionObserver, elapsed: float) -> dict[str, Any]:
    """Everything the run after evaluation point ``it`` depends on (see :mod:`~dream_plugin.harness.ab.runstate`)."""
    return {
        "iteration": it, "syn": syn.detach().cpu().clone(), "opt_img": opt_img.state_dict(),
        "random": random_states(), "selector": selector.state_dict(), "observer": observer.state_dict(),
        "loop_state": ctx.cfg.loop.save_state(ctx, it),
        "losses": list(ctx.losses), "sample_seconds": ctx.sample_seconds, "eval_seconds": ctx.eval_seconds,
        "curve": list(result.curve), "live": list(result.live), "elapsed": elapsed,
    }


def _restore(saved: dict[str, Any], ctx: LoopContext, result: RunResult, selector: Selector,
             observer: SelectionObserver, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Put a run back where :func:`_capture` saved it; returns (synthetic set, labels)."""
    cfg = ctx.cfg
    selector.load_state_dict(saved["selector"])
    observer.load_state_dict(saved["observer"])
    cfg.loop.load_state(ctx, saved["loop_state"] if "loop_state" in saved else saved["idc_network"])  # (older name)
    ctx.losses = list(saved["losses"])
    ctx.sample_seconds, ctx.eval_seconds = saved["sample_seconds"], saved["eval_seconds"]
    ctx.resume = {"iteration": saved["iteration"], "opt_img": saved["opt_img"]}
    result.curve, result.live = list(saved["curve"]), list(saved["live"])
    set_random_states(saved["random"])  # last: nothing above may draw from them
    labels = torch.arange(ctx.num_classes, device=device).repeat_interleave(cfg.ipc)
    return saved["syn"].to(device), labels


def _observed_selector(cfg: AbConfig, arm: str, seed: int) -> tuple[Selector, SelectionObserver]:
    """The arm's selector with a :class:`SelectionObserver` registered on it."""
    settings = cfg.arm_settings(arm, seed)
    # a plugin manager of this run's own: the observer sees only this run, and nothing leaks between runs
    selector = Selector(settings, plugin_manager=build_plugin_manager(settings.plugins))
    observer = SelectionObserver()
    selector.pm.register(observer, name=OBSERVER_NAME)
    return selector, observer


def _host_adapter(adapter_class: type, t: dict[str, Any], live: LiveNet, selector: Selector,
                  net_factory: Callable[[], torch.nn.Module]) -> Any:
    """The sampler the loop draws from: ``adapter_class`` over the host's own ``get_images``, selecting through
    ``selector`` with the live matching network (``net_factory`` builds one for the initialisation picks)."""
    return adapter_class(host_get_images(t["images_all"], t["indices_class"]), t["images_all"], t["indices_class"],
                         net=lambda: live.net, net_factory=net_factory, selector=selector)


class _NoBar:
    """What a run without a progress bar updates: nothing. (A disabled tqdm bar would still run a
    destructor at the end of each run, where a Ctrl-C is dropped by the interpreter.)"""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(cfg: AbConfig, arm: str, seed: int, position: int) -> Any:
    """The run's tqdm bar over ``cfg.iterations`` (none unless ``cfg.progress``)."""
    if not cfg.progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=cfg.iterations, desc=f"{arm} (seed {seed})", leave=False, disable=not cfg.progress,
                position=position, dynamic_ncols=True)


def _initial_synset(cfg: AbConfig, data: ImageDataset, ctx: LoopContext, seed: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(synthetic images, their labels)`` before distillation: real picks (``init='real'``) or noise."""
    labels = torch.arange(data.num_classes, device=device).repeat_interleave(cfg.ipc)
    syn = torch.empty((data.num_classes * cfg.ipc, data.channels, data.image_size, data.image_size), device=device)
    if cfg.init == "real":
        factor = cfg.loop.factor(cfg)
        for c in range(data.num_classes):
            picks = ctx.real(c, cfg.decoded_ipc, "init").detach()
            syn[c * cfg.ipc:(c + 1) * cfg.ipc] = mosaic(picks, factor)  # IDC's "mix" init (a copy when factor 1)
    else:
        g = torch.Generator().manual_seed(derive_seed(seed, "syn-noise"))
        syn.copy_(torch.randn(syn.shape, generator=g))
    return syn, labels


def _record_run(result: RunResult, ctx: LoopContext, observer: SelectionObserver, final: torch.Tensor) -> None:
    """Copy the loop's timings and losses, the selection totals and the final synthetic set into ``result``."""
    result.eval_seconds = ctx.eval_seconds
    result.sample_seconds = ctx.sample_seconds
    result.losses = ctx.losses
    result.select_seconds = float(observer.select_seconds)
    result.init_select_seconds = float(observer.init_select_seconds)
    result.selections = observer.selections
    result.reclusterings = observer.reclusterings
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


def device_tensors(data: ImageDataset, device: torch.device) -> dict[str, Any]:
    """The dataset's tensors on ``device``, moved once and shared by every arm of a run."""
    return {
        "images_all": data.train_images.to(device),
        "train_y": data.train_labels.to(device),
        "indices_class": [p.tolist() for p in data.class_indices()],
        "test_x": data.test_images.to(device),
        "test_y": data.test_labels.to(device),
    }
