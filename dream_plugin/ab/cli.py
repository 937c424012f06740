"""``dream-plugin ab``: the A/B benchmark subcommand (registered by :func:`add_ab_parser`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import ConfigError, load_yaml
from .config import ARM_DESCRIPTIONS, ARMS, METHODS, build_config, defaults_yaml
from .distances import GRADIENT_METRICS
from .presets import presets_text

# (flag, dotted config key, argparse keyword arguments)
FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--method", "method", {"choices": METHODS,
                            "help": "dm (distribution matching), dc (gradient matching) or idc (IDC's loop: trained "
                                    "matching network, multi-formation)"}),
    ("--dataset", "dataset", {"metavar": "NAME", "help": "mnist | digits | folder | torchvision:<Name>"}),
    ("--root", "root", {"metavar": "DIR", "help": "folder holding the dataset (folder, torchvision:<Name>)"}),
    ("--arms", "arms", {"nargs": "+", "metavar": "ARM", "help": "arms to run, among: " + ", ".join(ARMS)}),
    ("--seeds", "seeds", {"type": int, "help": "how many seeds (seed, seed+1, ...)"}),
    ("--seed", "seed", {"type": int, "help": "first seed"}),
    ("--ipc", "ipc", {"type": int, "help": "synthetic images per class"}),
    ("--iterations", "iterations", {"type": int, "help": "distillation iterations"}),
    ("--eval-points", "eval_points", {"type": int, "help": "evenly spaced evaluations from 0 to iterations"}),
    ("--eval-at", "eval_at", {"type": int, "nargs": "+", "metavar": "IT", "help": "explicit evaluation iterations (the last iteration is always added)"}),
    ("--batch-real", "batch_real", {"type": int, "help": "real images per class per matching step"}),
    ("--lr-img", "lr_img", {"type": float, "help": "synthetic-image learning rate (default: 1.0 dm, 0.1 dc)"}),
    ("--momentum-img", "momentum_img", {"type": float, "help": "synthetic-image SGD momentum"}),
    ("--init", "init", {"choices": ("real", "noise"), "help": "initialise synthetic images from real images or noise"}),
    ("--dsa", "dsa", {"action": argparse.BooleanOptionalAction, "help": "differentiable Siamese augmentation"}),
    ("--dsa-strategy", "dsa_strategy", {"metavar": "OPS", "help": "augmentations joined by '_' among crop, scale, flip"}),
    ("--interval", "interval", {"type": int, "help": "DREAM re-clustering interval (matching calls per class)"}),
    ("--subsample", "subsample", {"type": int, "help": "dream+ arm: DREAM+ sub-sampling s (must divide --batch-real)"}),
    ("--width", "model.width", {"type": int, "help": "ConvNet width"}),
    ("--depth", "model.depth", {"type": int, "help": "ConvNet depth"}),
    ("--norm", "model.norm", {"choices": ("instancenorm", "batchnorm", "none"), "help": "ConvNet normalisation"}),
    ("--outer-loop", "dc.outer_loop", {"type": int, "help": "DC: synthetic updates per iteration"}),
    ("--inner-loop", "dc.inner_loop", {"type": int, "help": "DC: network epochs on the synthetic set between them"}),
    ("--lr-net", "dc.lr_net", {"type": float, "help": "DC: network learning rate in the inner loop"}),
    ("--batch-train", "dc.batch_train", {"type": int, "help": "DC: inner-loop batch size"}),
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
    ("--eval-nets", "eval.nets", {"type": int, "help": "fresh networks trained per evaluation"}),
    ("--eval-epochs", "eval.epochs", {"type": int, "help": "epochs per evaluation network"}),
    ("--eval-lr", "eval.lr", {"type": float, "help": "evaluation learning rate (x0.1 halfway)"}),
    ("--eval-momentum", "eval.momentum", {"type": float, "help": "evaluation SGD momentum"}),
    ("--eval-weight-decay", "eval.weight_decay", {"type": float, "help": "evaluation weight decay"}),
    ("--eval-batch", "eval.batch", {"type": int, "help": "evaluation batch size"}),
    ("--eval-augment", "eval.augment", {"action": argparse.BooleanOptionalAction,
                                        "help": "augment evaluation training (default: follows --dsa)"}),
    ("--cache", "cache", {"metavar": "DIR", "help": "save what every arm of a seed computes identically here (idc's "
                          "matching-network trajectory, evaluations of identical synthetic sets) and reuse it; "
                          "same numbers, less work"}),
    ("--device", "device", {"metavar": "DEVICE", "help": "auto (cuda if available, else cpu), cpu, cuda, cuda:<i>"}),
    ("--threads", "threads", {"type": int, "help": "torch.set_num_threads (default 1; 0: torch's default, one per core)"}),
    ("--jobs", "jobs", {"type": int, "help": "parallel (arm, seed) runs, one process each (same numbers as 1)"}),
    ("--out", "out", {"metavar": "DIR", "help": "output folder (default dream-ab-<timestamp>); checked before the run "
                      "starts, and refused if it holds an earlier run unless --force"}),
]


def _dest(key: str) -> str:
    return "ab_" + key.replace(".", "__")


def add_ab_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``ab`` on the ``dream-plugin`` subparsers."""
    arms = "; ".join(f"{k}: {v}" for k, v in ARM_DESCRIPTIONS.items())
    p = sub.add_parser(
        "ab",
        help="A/B benchmark: distil with random vs DREAM selection (and ablations), same seeds",
        description="Distil a synthetic set with each arm (same loop, seeds and budget; only the selection "
        "differs), evaluate at several iterations, and report accuracy curves, speed-up and selection time. "
        f"Arms: {arms}.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (see --show-defaults); flags override it")
    p.add_argument("--show-defaults", action="store_true",
                   help="print the default config (with --preset/--config/flags: the resolved one) as YAML and exit")
    p.add_argument("--preset", metavar="NAME", help="a named configuration (DREAM's paper setting; see --presets); "
                   "--config and flags override it")
    p.add_argument("--presets", action="store_true", help="list the presets, one line each, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="time one inner step and one evaluation epoch, print the estimated cost of the run and stop")
    p.add_argument("--quick", action="store_true", help="small preset: about a minute on 2 CPU cores")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run saved in DIR (its --out): finished "
                   "runs are kept, the others continue from their last evaluation point; options given with it "
                   "must not change the run's numbers")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier run's results.json and plots in --out (never mixed with the new ones)")
    for flag, key, kwargs in FLAGS:
        # the metavar follows the flag (--width WIDTH), not the internal destination name
        kwargs = {"metavar": flag[2:].upper().replace("-", "_"), **kwargs} if "choices" not in kwargs \
            and kwargs.get("action") is None else kwargs
        p.add_argument(flag, dest=_dest(key), default=None, **kwargs)
    p.set_defaults(func=cmd_ab)
    return p


def flags_to_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given flags as a nested mapping of config keys."""
    out: dict[str, Any] = {}
    for _flag, key, _kw in FLAGS:
        value = getattr(args, _dest(key), None)
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if (key == "threads" and value == 0) else value
    if getattr(args, "no_progress", False):
        out["progress"] = False
    return out


def cmd_ab(args: argparse.Namespace) -> int:
    if args.presets:
        print(presets_text())
        return 0
    file_data = load_yaml(args.config) if args.config else None
    if args.show_defaults:
        resolved = args.preset or file_data or flags_to_overrides(args)
        cfg = build_config(file_data, flags_to_overrides(args), quick=args.quick, preset=args.preset,
                           validate=False) if resolved else None
        print(defaults_yaml(cfg, args.preset), end="")
        return 0
    if args.resume:
        from .resume import resume_config

        if args.force:
            raise ConfigError("--resume continues the run in its folder and --force starts over there; give one")
        if args.dry_run:
            raise ConfigError("--resume continues a run and --dry-run only estimates one; give one")
        cfg = resume_config(args.resume, file_data, flags_to_overrides(args), quick=args.quick)
    else:
        cfg = build_config(file_data, flags_to_overrides(args), quick=args.quick, preset=args.preset)
    from .runner import run_ab

    try:
        run_ab(cfg, force=args.force, log=print, out=args.resume, resume=bool(args.resume), dry_run=args.dry_run)
    except ModuleNotFoundError as exc:
        if "adapters" in str(exc):
            raise ConfigError(f"the get_images adapter is not available: {exc}") from exc
        raise
    return 0
