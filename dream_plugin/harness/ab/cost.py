"""What a run will cost, measured before it starts: one iteration and one evaluation epoch, timed.

A run of DREAM's paper setting takes many GPU-hours per (arm, seed); ``dream-plugin ab`` times the
pieces on the device it will use and prints the total before a long run (``--dry-run`` stops there):

* one matching step of the loop (an iteration; for the idc loop one inner step, i.e. one matching
  step per class and the network update on ``idc.n_data`` real samples), timed in the random arm
  after a warm-up as the difference between a run of two and a run of one (the rest is the per-run
  or per-outer-iteration fixed cost: a fresh network, the live-accuracy checks, the initial picks);
* for a loop that trains a network on real data, one SGD step of it (idc: on ``idc.batch_net``
  real images; pretraining cost);
* one epoch of an evaluation network on the decoded synthetic set.

What differs between loop methods (steps per iteration, the probe's config, how the unit costs add
up, the network step) is the method's :class:`~dream_plugin.harness.ab.methods.base.LoopCost`.

The estimate is for the random arm; DREAM's arms add their re-clustering (one k-means per class
every ``interval`` matching calls), which ``selection`` shares in results.json report afterwards.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dream_plugin.harness.data import ImageDataset
from dream_plugin.harness.ab.config import AbConfig

LONG_RUN_STEPS = 1_000
"""Runs with at least this many iterations (idc: inner steps) per (arm, seed) are estimated before they start."""
LONG_RUN_EVAL_EPOCHS = 5_000
"""... or with at least this many evaluation epochs per (arm, seed)."""


@dataclass(frozen=True)
class CostEstimate:
    """Measured unit costs and the run's total, in seconds."""

    device: str
    iteration_seconds: float
    """One iteration of the loop (idc: one inner step)."""
    train_step_seconds: float
    """One SGD step of the network the loop trains on real data (idc's matching network; 0 for none)."""
    eval_epoch_seconds: float
    per_run_seconds: float
    runs: int
    jobs: int

    @property
    def total_seconds(self) -> float:
        return self.per_run_seconds * self.runs / max(1, self.jobs)

    def text(self) -> str:
        unit = "GPU" if self.device.startswith("cuda") else self.device.upper()
        return (f"estimated cost on {self.device}: one iteration {self.iteration_seconds:.3g} s, one network step "
                f"{self.train_step_seconds:.3g} s, one evaluation epoch {self.eval_epoch_seconds:.3g} s -> about "
                f"{_hours(self.per_run_seconds)} {unit}-hours per arm and seed, {_hours(self.total_seconds)} hours "
                f"for {self.runs} runs with {self.jobs} job(s) (random arm's cost; DREAM's re-clustering comes on top)")


def _hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:.2g}" if h < 10 else f"{h:.0f}"


def is_long(cfg: AbConfig) -> bool:
    """Whether a run is long enough to be estimated before it starts."""
    steps = cfg.iterations * cfg.loop.cost.steps(cfg)
    evals = len(cfg.eval_iterations) * cfg.eval.nets * cfg.eval.epochs
    return steps >= LONG_RUN_STEPS or evals >= LONG_RUN_EVAL_EPOCHS


def per_run_seconds(cfg: AbConfig, iteration: float, overhead: float, train_step: float, eval_epoch: float) -> float:
    """A run's cost from the unit costs: iterations (idc: inner steps plus each outer iteration's fixed
    ``overhead``), each fresh network's pretraining, every evaluation."""
    distil = cfg.loop.cost.seconds(cfg, iteration, overhead, train_step)
    return distil + len(cfg.eval_iterations) * cfg.eval.nets * cfg.eval.epochs * eval_epoch


def estimate_cost(cfg: AbConfig, data: ImageDataset, device: torch.device, tensors: dict[str, Any]) -> CostEstimate:
    """Time the loop with one and with two iterations (idc: inner steps), after a warm-up run; the
    difference is one iteration, the rest the fixed cost. Then one network step and one evaluation epoch."""
    from dream_plugin.harness.ab.arm import run_arm

    def probe(steps: int) -> tuple[float, float]:
        r = run_arm("random", cfg.seed, _probe_config(cfg, steps), data, device, tensors=tensors)
        return r.wall_seconds - r.eval_seconds, r.eval_seconds

    probe(1)  # warm-up: allocations, kernels, caches
    one, evaluation = probe(1)
    two, _ = probe(2)
    iteration = max(two - one, 0.0)
    overhead = max(one - iteration, 0.0)
    train_step = _train_step_seconds(cfg, data, device, tensors) if cfg.loop.cost.network_training else 0.0
    eval_epoch = evaluation / 2  # one network, one epoch (and one test pass) at each of the probe's two points
    return CostEstimate(device=str(device), iteration_seconds=iteration, train_step_seconds=train_step,
                        eval_epoch_seconds=eval_epoch,
                        per_run_seconds=per_run_seconds(cfg, iteration, overhead, train_step, eval_epoch),
                        runs=len(cfg.arms) * cfg.seeds, jobs=cfg.jobs)


def _probe_config(cfg: AbConfig, steps: int) -> AbConfig:
    """The run's config cut to ``steps`` iterations (idc: one outer iteration of ``steps`` inner steps, no
    pretraining) and one evaluation network of one epoch at two points."""
    ev = dataclasses.replace(cfg.eval, nets=1, epochs=1)
    loop = cfg.loop.cost.probe(cfg, steps)
    return dataclasses.replace(loop, eval_at=(0, loop.iterations), arms=("random",), seeds=1, eval=ev,
                               progress=False, jobs=1, cache=None)


def _train_step_seconds(cfg: AbConfig, data: ImageDataset, device: torch.device, tensors: dict[str, Any]) -> float:
    """One SGD step of a fresh network as the loop trains it on real data (its optimiser and batch size:
    ``LoopCost.network_training``; idc: ``idc.batch_net`` images), after 2 warm-up steps."""
    from dream_plugin.harness.ab.loops import seeded_net

    net = seeded_net(cfg, data.channels, data.num_classes, data.image_size, cfg.seed, device)
    opt, batch = cfg.loop.cost.network_training(cfg, net)
    x = tensors["images_all"][:batch]
    y = tensors["train_y"][:batch]
    times = []
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times[2:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
