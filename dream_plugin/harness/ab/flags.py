"""The flags of ``dream-plugin ab``: each with its dotted config key and its argparse arguments.

A module of its own (data only) so that the config's checks can name a key's flag without
importing the command. The flags of a loop method's own options come from the method
(``LoopMethod.flags``, of the methods registered when this module is imported); ``--method``'s
choices are the registry's names, read when the command line is parsed.
"""

from __future__ import annotations

import argparse
from typing import Any

from dream_plugin.harness.ab.methods import METHODS, registered_methods
from dream_plugin.harness.ab.names import ARMS


def _method_help() -> str:
    described = [f"{m.name} ({m.summary})" for m in registered_methods()]
    return ", ".join(described[:-1]) + " or " + described[-1] if len(described) > 1 else described[0]


def _lr_img_help() -> str:
    return "synthetic-image learning rate (default: " + ", ".join(f"{m.lr_img!r} {m.name}" for m in registered_methods()) + ")"


# (flag, dotted config key, argparse keyword arguments)
FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--method", "method", {"choices": METHODS, "help": _method_help()}),
    ("--dataset", "dataset", {"metavar": "NAME", "help": "mnist | digits | folder | torchvision:<Name>"}),
    ("--root", "root", {"metavar": "DIR", "help": "folder holding the dataset (folder, torchvision:<Name>)"}),
    ("--arms", "arms", {"nargs": "+", "metavar": "ARM", "help": "arms to run: " + ", ".join(ARMS)
                                                             + ", or any registered strategy S as S, match:S or init:S"}),
    ("--seeds", "seeds", {"type": int, "help": "how many seeds (seed, seed+1, ...)"}),
    ("--seed", "seed", {"type": int, "help": "first seed"}),
    ("--ipc", "ipc", {"type": int, "help": "synthetic images per class"}),
    ("--iterations", "iterations", {"type": int, "help": "distillation iterations"}),
    ("--eval-points", "eval_points", {"type": int, "help": "evenly spaced evaluations from 0 to iterations"}),
    ("--eval-at", "eval_at", {"type": int, "nargs": "+", "metavar": "IT", "help": "explicit evaluation iterations (the last iteration is always added)"}),
    ("--batch-real", "batch_real", {"type": int, "help": "real images per class per matching step"}),
    ("--lr-img", "lr_img", {"type": float, "help": _lr_img_help()}),
    ("--momentum-img", "momentum_img", {"type": float, "help": "synthetic-image SGD momentum"}),
    ("--init", "init", {"choices": ("real", "noise"), "help": "initialise synthetic images from real images or noise"}),
    ("--dsa", "dsa", {"action": argparse.BooleanOptionalAction, "help": "differentiable Siamese augmentation"}),
    ("--dsa-strategy", "dsa_strategy", {"metavar": "OPS", "help": "augmentations joined by '_' among crop, scale, flip"}),
    ("--interval", "interval", {"type": int, "help": "DREAM re-clustering interval (matching calls per class)"}),
    ("--subsample", "subsample", {"type": int, "help": "dream+ arm: DREAM+ sub-sampling s (must divide --batch-real)"}),
    ("--width", "model.width", {"type": int, "help": "ConvNet width"}),
    ("--depth", "model.depth", {"type": int, "help": "ConvNet depth"}),
    ("--norm", "model.norm", {"choices": ("instancenorm", "batchnorm", "none"), "help": "ConvNet normalisation"}),
    *(flag for method in registered_methods() for flag in method.flags),
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
    ("--share", "share", {"action": argparse.BooleanOptionalAction,
                          "help": "without --cache, share that work between the arms of this run only (default; "
                          "--no-share: every arm does all its own work, to time arms alone)"}),
    ("--device", "device", {"metavar": "DEVICE", "help": "auto (cuda if available, else cpu), cpu, cuda, cuda:<i>"}),
    ("--threads", "threads", {"type": int, "help": "torch.set_num_threads (default 1; 0: torch's default, one per core)"}),
    ("--jobs", "jobs", {"type": int, "help": "parallel (arm, seed) runs, one process each (same numbers as 1)"}),
    ("--out", "out", {"metavar": "DIR", "help": "output folder (default dream-ab-<timestamp>); checked before the run "
                      "starts, and refused if it holds an earlier run unless --force"}),
]
