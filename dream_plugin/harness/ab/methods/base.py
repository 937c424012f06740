"""What a loop method of ``dream-plugin ab`` is: :class:`LoopMethod`, everything the harness asks of
a method by name, and :class:`LoopCost`, how its run's cost is estimated.

A method is data: its name, its step function and the few numbers and functions through which the
config, the run, the caches and the cost estimate differ between methods. Every default is what a
loop without options of its own needs (dm's), so a new method states only where it differs.
The registry is :mod:`dream_plugin.harness.ab.methods`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dream_plugin.harness.ab.loops import LoopContext

    Step = Callable[[int, torch.Tensor, torch.Tensor, torch.optim.Optimizer, LoopContext], float]

Flag = tuple[str, str, dict[str, Any]]
"""One command-line flag: (flag, dotted config key, argparse keyword arguments), as in
:data:`dream_plugin.harness.ab.flags.FLAGS`."""


def class_slice(c: int, ipc: int) -> slice:
    """The rows of class ``c`` in a synthetic set stored class by class, ``ipc`` rows each."""
    return slice(c * ipc, (c + 1) * ipc)


def _one(cfg: Any) -> int:
    return 1


def _no_check(section: Any) -> None:
    return None


def _no_state(ctx: Any, it: int) -> None:
    return None


def _restore_nothing(ctx: Any, state: Any) -> None:
    return None


def _cut_iterations(cfg: Any, steps: int) -> Any:
    return dataclasses.replace(cfg, iterations=steps)


def _iteration_seconds(cfg: Any, step: float, overhead: float, network_step: float) -> float:
    return cfg.iterations * step + overhead


@dataclass(frozen=True)
class LoopCost:
    """How :mod:`~dream_plugin.harness.ab.cost` estimates a run of the loop before it starts.

    The estimate times the loop with one and with two matching steps (the difference is one step,
    the rest the fixed overhead) and, for a loop that trains a network on real data, one SGD step
    of that network; these functions turn the unit costs into the run's distillation seconds.
    """

    steps: Callable[[Any], int] = _one
    """Matching steps in one iteration of the run's config (idc: ``idc.inner_loop``)."""
    probe: Callable[[Any, int], Any] = _cut_iterations
    """The run's config cut to ``steps`` matching steps (idc: one outer iteration of ``steps`` inner
    steps, no pretraining); the estimate sets the evaluation and arms itself."""
    seconds: Callable[[Any, float, float, float], float] = _iteration_seconds
    """Distillation seconds of a run from (config, one step, the fixed overhead, one network step)."""
    network_training: Callable[[Any, nn.Module], tuple[torch.optim.Optimizer, int]] | None = None
    """(optimiser, batch size) of the network the loop trains on real data (idc's matching network),
    whose one SGD step the estimate times; None: the loop trains no network on real data."""


@dataclass(frozen=True)
class LoopMethod:
    """One distillation loop of ``dream-plugin ab`` (``--method NAME``) and all the harness asks of it."""

    name: str
    """The value of ``method`` / ``--method``."""
    summary: str
    """A few words for ``--help`` and the defaults file (``distribution matching``)."""
    step: Step
    """One iteration: ``step(it, syn, labels, opt_img, ctx) -> mean matching loss``. It draws every real
    batch through ``ctx.real`` (the only place where arms differ), sets ``ctx.live.net`` to the network
    it matches with before drawing (DREAM embeds with it), and updates the stored synthetic set
    ``syn`` with ``opt_img``; everything else random comes from seeds derived from ``ctx.seed``."""
    lr_img: float
    """The synthetic images' learning rate when ``lr_img`` is null (the hosts' value)."""

    # -- its options ---------------------------------------------------------------------------
    section: str | None = None
    """The :class:`~dream_plugin.harness.ab.config.AbConfig` field holding its options (``dc``,
    ``idc``); a value given there under another method is an error. None: no options of its own."""
    flags: tuple[Flag, ...] = ()
    """The command-line flags of its section (read when :mod:`~dream_plugin.harness.ab.flags` is imported)."""
    check: Callable[[Any], None] = _no_check
    """Validate its section (every config holds every section, so it runs whatever the method);
    raises :class:`~dream_plugin.common.errors.ConfigError` naming the option."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Config values that differ for this method (idc: 40 iterations); a file, ``--quick`` and flags win."""
    quick: Mapping[str, Any] = field(default_factory=dict)
    """Added to the ``--quick`` preset for this method (idc: 4 outer iterations of 3 inner steps)."""

    # -- its synthetic set ---------------------------------------------------------------------
    factor: Callable[[Any], int] = _one
    """Multi-formation: each stored image holds factor x factor tiles and is trained on and evaluated
    as the factor**2 images they decode into (idc: ``idc.factor``; 1: stored = training images)."""

    # -- what its runs share and save ----------------------------------------------------------
    network_key: Callable[[Any], dict[str, Any]] | None = None
    """What its matching network's trajectory depends on besides the data, model and seed, when that
    trajectory is the same in every arm and can be cached (idc); None: nothing to share."""
    save_state: Callable[[Any, int], Any] = _no_state
    """``save_state(ctx, it)``: the loop's own state at evaluation point ``it``, for a resumed run (idc:
    its matching network and optimiser); kept in ``ctx.state`` by the step."""
    load_state: Callable[[Any, Any], None] = _restore_nothing
    """``load_state(ctx, state)``: put back what :attr:`save_state` returned."""

    cost: LoopCost = field(default_factory=LoopCost)
    """How the cost estimate counts its work."""
