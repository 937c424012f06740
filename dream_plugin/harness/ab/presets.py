"""Named ``dream-plugin ab`` configurations for DREAM's paper setting (``--preset NAME``, ``--presets``).

Each preset sets everything the paper's run uses that the idc loop has (Liu et al., ICCV 2023,
run through IDC's loop as the official DREAM code does; see docs/reproducing.md): ConvNet-3 of
width 128 with instance norm, 10 images per class, multi-formation factor 2, 100 inner steps per
outer iteration, the matching network trained on ``n_data`` random real samples after every inner
step, ``batch_real`` 128, re-clustering every 10 matching calls, IDC's distance for the dataset,
image momentum 0.5, network SGD 0.01 / 0.9 / 5e-4, an evaluation every 40 outer iterations with
IDC's evaluation length (1,000 epochs), and the arms of the paper's comparison.

Learning rates of the synthetic images are IDC's, converted to the loop's normalised pixels: IDC
steps on pixels in [0, 1] with lr_img (5e-3 for CIFAR-10 with mse, 1e-4 for MNIST with l1, scaled
by ipc / 10), and a step of size lr on raw pixels is a step of lr / std**2 on normalised ones (one
mean std over the channels; the per-channel difference is listed in docs/reproducing.md).

Resolution order: built-in defaults < preset < ``--config FILE`` < ``--quick`` < flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_STD = (0.3081,)


def _normalised_lr(lr_raw: float, std: tuple[float, ...]) -> float:
    """IDC's lr on [0, 1] pixels as the lr of the same step on normalised pixels (mean std over channels)."""
    mean_std = sum(std) / len(std)
    return round(lr_raw / mean_std**2, 6)


def _every(step: int, last: int) -> list[int]:
    return list(range(0, last + 1, step))


PAPER_ARMS = ["random", "dream", "dream+", "init-only", "match-only"]

_PAPER_IDC: dict[str, Any] = {
    "factor": 2, "inner_loop": 100, "fix_iter": 1, "batch_net": 128,
    "lr_net": 0.01, "momentum_net": 0.9, "weight_decay_net": 0.0005, "batch_syn_max": 128,
}
_PAPER_COMMON: dict[str, Any] = {
    "method": "idc", "ipc": 10, "batch_real": 128, "interval": 10, "momentum_img": 0.5, "init": "real",
    "arms": PAPER_ARMS, "seeds": 3,
    "model": {"width": 128, "depth": 3, "norm": "instancenorm"},
    "eval": {"nets": 1, "epochs": 1000, "lr": 0.01, "batch": 64, "momentum": 0.9, "weight_decay": 0.0005,
             "augment": True},
    "dsa": True,
}


@dataclass(frozen=True)
class Preset:
    """A named configuration: one line of description and the config keys it sets."""

    name: str
    summary: str
    data: Mapping[str, Any]


def _cifar10(iterations: int) -> dict[str, Any]:
    return {**_PAPER_COMMON, "dataset": "torchvision:CIFAR10", "iterations": iterations,
            "eval_at": _every(40, iterations), "lr_img": _normalised_lr(5e-3, CIFAR10_STD),
            "dsa_strategy": "crop_scale_flip",
            "idc": {**_PAPER_IDC, "n_data": 2000, "metric": "mse"}}


def _mnist(iterations: int) -> dict[str, Any]:
    return {**_PAPER_COMMON, "dataset": "torchvision:MNIST", "iterations": iterations,
            "eval_at": _every(40, iterations), "lr_img": _normalised_lr(1e-4, MNIST_STD),
            "dsa_strategy": "crop_scale",  # IDC drops flips for digits
            "idc": {**_PAPER_IDC, "n_data": 500, "metric": "l1"}}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("dream-cifar10-ipc10",
           "the paper's >8x figure: CIFAR-10, ipc 10, factor 2, ConvNet-3 w128, 1,000 outer iterations, eval every 40",
           _cifar10(1000)),
    Preset("dream-cifar10-ipc10-short",
           "its first 200 outer iterations (where DREAM's speed-up shows), eval every 40",
           _cifar10(200)),
    Preset("dream-mnist-ipc10",
           "MNIST at the paper's scale: ipc 10, factor 2, ConvNet-3 w128, IDC's l1 distance, 1,000 outer iterations",
           _mnist(1000)),
)}
"""Every preset by name (``dream-plugin ab --presets`` lists them)."""


def preset_data(name: str) -> dict[str, Any]:
    """The config keys of preset ``name`` (a deep copy); a clear error for an unknown name."""
    import copy

    from dream_plugin.core.config import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"preset (--preset): {name!r} is not allowed; expected one of {', '.join(PRESETS)}")
    return copy.deepcopy(dict(PRESETS[name].data))


def presets_text() -> str:
    """One line per preset, for ``--presets``."""
    width = max(len(n) for n in PRESETS)
    lines = [f"{p.name:<{width}}  {p.summary}" for p in PRESETS.values()]
    lines.append("use: dream-plugin ab --preset NAME --root DIR (torchvision datasets read from DIR, never "
                 "downloaded); --show-defaults --preset NAME prints the resolved config; --dry-run prints the "
                 "estimated cost and stops")
    return "\n".join(lines)
