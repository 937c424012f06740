"""``--method idc``: the IDC-style reference loop (Kim et al., ICML 2022), as the official DREAM code runs it.

One call of :func:`idc_round` is one outer iteration:

* a fresh, seeded matching network every ``idc.fix_iter`` outer iterations (optionally trained on
  ``idc.pretrain`` random real samples first), kept with its SGD state in between;
* the synthetic set is clamped to the valid pixel range, and the inner-step counter restarts, so
  DREAM clusters the current network afresh at the first matching call of the round;
* ``idc.inner_loop`` inner steps; in each, per class: the real batch comes through the sampler's
  ``.match`` (the only place where arms differ), the class's stored images are decoded by
  multi-formation (:func:`~dream_plugin.harness.mosaic.unmosaic`), the same augmentation is applied to
  both, and one SGD step on the stored pixels minimises the per-layer gradient distance
  ``idc.metric`` (IDC's l1 or mse, or DC's scale-free dc; :mod:`dream_plugin.harness.ab.distances`);
* after each inner step the network trains on ``idc.n_data`` random real samples that never go
  through the selection, drawn from explicit seeds, so they are the same in every arm (and can be
  shared between runs through ``cache``, :mod:`dream_plugin.harness.ab.cache`).

Its options: :class:`IdcConfig` (``idc:`` in the config); image lr 0.01. The method (:data:`IDC`)
also says what its stored set decodes into (``idc.factor``), what its cached network trajectory
depends on, what a resumed run restores (the matching network) and how its cost is counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.common.errors import check_allowed
from dream_plugin.common.seeds import derive_seed
from dream_plugin.harness.ab.distances import GRADIENT_METRICS, idc_match_loss
from dream_plugin.harness.ab.methods.base import Flag, LoopCost, LoopMethod, class_slice
from dream_plugin.harness.mosaic import unmosaic

if TYPE_CHECKING:
    from dream_plugin.harness.ab.loops import LoopContext


@dataclass(frozen=True)
class IdcConfig:
    """The IDC-style loop (Kim et al. 2022, as the official DREAM code runs it): a matching network
    trained on random real batches between matching steps, multi-formation synthetic images."""

    factor: int = 2
    """Multi-formation: each stored image holds factor x factor tiles, decoded into factor**2 images."""
    inner_loop: int = 10
    """Inner steps per outer iteration (IDC: 100); each is one matching step per class plus a network update."""
    fix_iter: int = 1
    """A fresh matching network every ``fix_iter`` outer iterations (IDC's default: every one)."""
    n_data: int = 500
    """Random real samples the matching network trains on after each inner step (0: never trained)."""
    pretrain: int = 0
    """Random real samples each fresh network trains on before its first matching step (DREAM+: one epoch)."""
    batch_net: int = 128
    """Batch size of the network updates on real data."""
    lr_net: float = 0.01
    momentum_net: float = 0.9
    weight_decay_net: float = 0.0005
    metric: Literal["l1", "mse", "dc"] = "l1"
    """Per-layer gradient distance: IDC's sum of absolute (l1, its MNIST setting) or squared (mse)
    differences, or DC/DSA's scale-free per-output-unit 1 - cosine (dc)."""
    batch_syn_max: int = 128
    """At most this many decoded synthetic images per class and matching step (a random subset beyond)."""


FLAGS: tuple[Flag, ...] = (
    ("--factor", "idc.factor", {"type": int, "help": "idc: multi-formation factor (factor**2 images per stored one)"}),
    ("--idc-inner-loop", "idc.inner_loop", {"type": int, "help": "idc: inner steps per outer iteration"}),
    ("--fix-iter", "idc.fix_iter", {"type": int, "help": "idc: a fresh matching network every N outer iterations"}),
    ("--n-data", "idc.n_data", {"type": int, "help": "idc: real samples the network trains on after each inner step"}),
    ("--pretrain", "idc.pretrain", {"type": int, "help": "idc: real samples each fresh network trains on first"}),
    ("--batch-net", "idc.batch_net", {"type": int, "help": "idc: batch size of the network updates"}),
    ("--idc-lr-net", "idc.lr_net", {"type": float, "help": "idc: matching network learning rate"}),
    ("--idc-momentum-net", "idc.momentum_net", {"type": float, "help": "idc: matching network SGD momentum"}),
    ("--idc-weight-decay-net", "idc.weight_decay_net", {"type": float,
                                                        "help": "idc: matching network weight decay"}),
    ("--metric", "idc.metric", {"choices": GRADIENT_METRICS,
                                 "help": "idc: per-layer gradient distance (l1, mse: IDC's; dc: DC/DSA's 1 - cosine)"}),
    ("--batch-syn-max", "idc.batch_syn_max", {"type": int, "help": "idc: decoded synthetic images per class and step"}),
)


def check_idc(i: IdcConfig) -> None:
    """Validate the ``idc`` section."""
    check_allowed(i.factor >= 1, "idc.factor (--factor)", i.factor, "an integer >= 1")
    check_allowed(i.inner_loop >= 1, "idc.inner_loop (--idc-inner-loop)", i.inner_loop, "an integer >= 1")
    check_allowed(i.fix_iter >= 1, "idc.fix_iter (--fix-iter)", i.fix_iter, "an integer >= 1")
    check_allowed(i.n_data >= 0, "idc.n_data (--n-data)", i.n_data, "an integer >= 0 (0: the network is never trained)")
    check_allowed(i.pretrain >= 0, "idc.pretrain (--pretrain)", i.pretrain, "an integer >= 0")
    check_allowed(i.batch_net >= 1, "idc.batch_net (--batch-net)", i.batch_net, "an integer >= 1")
    check_allowed(i.lr_net > 0, "idc.lr_net (--idc-lr-net)", i.lr_net, "a number > 0")
    check_allowed(0 <= i.momentum_net < 1, "idc.momentum_net (--idc-momentum-net)", i.momentum_net, "a number in [0, 1)")
    check_allowed(i.weight_decay_net >= 0, "idc.weight_decay_net (--idc-weight-decay-net)", i.weight_decay_net,
                  "a number >= 0")
    check_allowed(i.metric in GRADIENT_METRICS, "idc.metric (--metric)", i.metric, "one of " + ", ".join(GRADIENT_METRICS))
    check_allowed(i.batch_syn_max >= 1, "idc.batch_syn_max (--batch-syn-max)", i.batch_syn_max, "an integer >= 1")


def decode_class(stored: torch.Tensor, factor: int) -> torch.Tensor:
    """The ipc * factor**2 training images that one class's ``stored`` images decode into."""
    return unmosaic(stored, factor)


def real_batch_indices(seed: int, samples: int, total: int, batch: int, *parts: object) -> list[torch.Tensor]:
    """Indices of the random real batches for one network update: ``samples`` draws in batches of
    ``batch`` from a fresh permutation of the ``total`` training images (more when samples > total).

    A function of its arguments only (a generator seeded by (seed, parts)), never of the selection or
    of a global generator: every arm trains its matching network on the same images.
    """
    if samples <= 0:
        return []
    g = torch.Generator().manual_seed(derive_seed(seed, "idc-real", *parts))
    order = torch.cat([torch.randperm(total, generator=g) for _ in range(math.ceil(samples / total))])
    return [order[start:min(start + batch, samples)] for start in range(0, samples, batch)]


def train_on_real(net: nn.Module, opt: torch.optim.Optimizer, samples: int, ctx: LoopContext, *parts: object) -> None:
    """SGD on :func:`real_batch_indices` batches (``idc.batch_net``) until ``samples`` samples were seen.

    With ``ctx.network_cache`` the resulting network and optimiser state is loaded when an earlier run
    saved it (the trajectory is the same in every arm, see :mod:`dream_plugin.harness.ab.cache`), and
    saved otherwise.
    """
    net.train()
    if samples <= 0:
        return
    cache = ctx.network_cache
    if cache is not None and cache.load(net, opt, parts):
        return
    batches = real_batch_indices(ctx.seed, samples, ctx.train_x.shape[0], ctx.cfg.idc.batch_net, *parts)
    for b, idx in enumerate(batches):
        idx = idx.to(ctx.train_x.device)
        xb = ctx.aug(ctx.train_x[idx], "idc-real", *parts, b)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), ctx.train_y[idx]).backward()
        opt.step()
    if cache is not None:
        cache.save(net, opt, parts)


def network_optimizer(net: nn.Module, ic: IdcConfig) -> torch.optim.SGD:
    """The matching network's SGD (``idc.lr_net``, ``idc.momentum_net``, ``idc.weight_decay_net``)."""
    return torch.optim.SGD(net.parameters(), lr=ic.lr_net, momentum=ic.momentum_net, weight_decay=ic.weight_decay_net)


def _network(it: int, ctx: LoopContext) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The matching network of outer iteration ``it``: kept for ``fix_iter`` iterations, then renewed."""
    ic = ctx.cfg.idc
    state = ctx.state
    if state.get("net") is None or it % ic.fix_iter == 0:
        k = it // ic.fix_iter
        net = ctx.make_net(derive_seed(ctx.seed, "idc-net", k))
        opt = network_optimizer(net, ic)
        train_on_real(net, opt, ic.pretrain, ctx, "pretrain", k)
        state["net"], state["opt"] = net, opt
    return state["net"], state["opt"]


def idc_round(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer,
              ctx: LoopContext) -> float:
    """One outer iteration of the IDC loop; returns the mean matching loss per class and inner step."""
    cfg, ic = ctx.cfg, ctx.cfg.idc
    net, opt_net = _network(it, ctx)
    net.train()
    ctx.live.net = net
    if ctx.new_round is not None:
        ctx.new_round()
    if ctx.pixel_range is not None:
        low, high = ctx.pixel_range
        with torch.no_grad():
            syn.copy_(torch.maximum(torch.minimum(syn, high), low))
    if ctx.on_live is not None:
        ctx.on_live(it, "start", net)
    params = list(net.parameters())
    ipc = cfg.ipc
    total = 0.0
    for inner in range(ic.inner_loop):
        for c in range(ctx.num_classes):
            real = ctx.real(c, cfg.batch_real)
            fake = decode_class(syn[class_slice(c, ipc)], ic.factor)
            if fake.shape[0] > ic.batch_syn_max:
                g = torch.Generator().manual_seed(derive_seed(ctx.seed, "idc-syn-subset", it, inner, c))
                fake = fake[torch.randperm(fake.shape[0], generator=g)[:ic.batch_syn_max].to(fake.device)]
            real = ctx.aug(real, it, inner, c)
            fake = ctx.aug(fake, it, inner, c)
            y_real = torch.full((real.shape[0],), c, dtype=torch.long, device=ctx.device)
            y_fake = torch.full((fake.shape[0],), c, dtype=torch.long, device=ctx.device)
            g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
            g_fake = torch.autograd.grad(F.cross_entropy(net(fake), y_fake), params, create_graph=True)
            loss = idc_match_loss(g_fake, g_real, ic.metric)
            opt_img.zero_grad(set_to_none=True)
            loss.backward()
            opt_img.step()
            total += float(loss.detach())
        train_on_real(net, opt_net, ic.n_data, ctx, "update", it, inner)
    if ctx.on_live is not None:
        ctx.on_live(it, "end", net)
    return total / (ic.inner_loop * ctx.num_classes)


# -- what a resumed run restores ---------------------------------------------------------------

def network_state(ctx: LoopContext, it: int) -> dict[str, Any] | None:
    """The matching network at the start of outer iteration ``it`` (None: none kept yet).

    It was built at iteration ``fix_iter * ((it - 1) // fix_iter)`` from that index's seed.
    """
    net, opt = ctx.state.get("net"), ctx.state.get("opt")
    if net is None:
        return None
    return {"k": (it - 1) // ctx.cfg.idc.fix_iter, "net": net.state_dict(), "opt": opt.state_dict()}


def restore_network(ctx: LoopContext, state: dict[str, Any] | None) -> None:
    """Rebuild the matching network and its SGD state saved by :func:`network_state`."""
    if state is None:
        return
    net = ctx.make_net(derive_seed(ctx.seed, "idc-net", state["k"]))
    net.load_state_dict(state["net"])
    opt = network_optimizer(net, ctx.cfg.idc)
    opt.load_state_dict(state["opt"])
    ctx.state["net"], ctx.state["opt"] = net, opt


# -- what the cache and the cost estimate count --------------------------------------------------

def trajectory_parts(cfg: Any) -> dict[str, Any]:
    """What the matching network's trajectory depends on besides the data, model and seed: the
    network's training settings and the augmentation of its real batches (not the matching)."""
    i = cfg.idc
    return {
        "idc": {"fix_iter": i.fix_iter, "n_data": i.n_data, "pretrain": i.pretrain, "batch_net": i.batch_net,
                "lr_net": i.lr_net, "momentum_net": i.momentum_net, "weight_decay_net": i.weight_decay_net},
        "dsa": cfg.dsa,
        "dsa_strategy": cfg.dsa_strategy if cfg.dsa else None,
    }


def _probe(cfg: Any, steps: int) -> Any:
    return dataclasses.replace(cfg, iterations=1, idc=dataclasses.replace(cfg.idc, inner_loop=steps, pretrain=0))


def _seconds(cfg: Any, step: float, overhead: float, network_step: float) -> float:
    """Inner steps plus each outer iteration's fixed overhead, plus each fresh network's pretraining."""
    ic = cfg.idc
    distil = cfg.iterations * (ic.inner_loop * step + overhead)
    fresh = math.ceil(cfg.iterations / ic.fix_iter)
    return distil + fresh * math.ceil(ic.pretrain / ic.batch_net) * network_step


IDC = LoopMethod(
    name="idc",
    summary="IDC's loop: trained matching network, multi-formation",
    step=idc_round,
    lr_img=0.01,
    section="idc",
    flags=FLAGS,
    check=check_idc,
    defaults={"iterations": 40, "eval_points": 5},
    quick={"iterations": 4, "idc": {"inner_loop": 3, "n_data": 128, "batch_net": 64}, "eval": {"epochs": 15}},
    factor=lambda cfg: cfg.idc.factor,
    network_key=trajectory_parts,
    save_state=network_state,
    load_state=restore_network,
    cost=LoopCost(steps=lambda cfg: cfg.idc.inner_loop, probe=_probe, seconds=_seconds,
                  network_training=lambda cfg, net: (network_optimizer(net, cfg.idc), cfg.idc.batch_net)),
)
"""The idc loop method (registered in :mod:`dream_plugin.harness.ab.methods`); ``--quick`` runs 4 outer
iterations of 3 inner steps with evaluation nets trained for 15 epochs."""
