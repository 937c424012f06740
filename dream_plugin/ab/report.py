"""The A/B report: terminal table, accuracy-vs-iteration curves and grids of synthetic images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset
from .names import arm_file_name


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_table(results: dict[str, Any]) -> str:
    """One row per arm: accuracy at the first and last evaluation, speed-up vs random, times."""
    its = results["eval_iterations"]
    cfg = results["config"]
    env = results["environment"]
    head = (f"{cfg['method'].upper()} on {results['resolved']['dataset_name']}, ipc {cfg['ipc']}, "
            f"{cfg['iterations']} iterations; test accuracy % (mean ± std over {cfg['eval']['nets']} nets x "
            f"{cfg['seeds']} seed(s)); {env['device']}, {env['torch_threads']} threads")
    cols = [("arm", 11), (f"acc@{its[0]}", 15), (f"final acc@{its[-1]}", 17), ("reach it", 8),
            ("speed-up", 8), ("wall s", 8), ("distill s", 9), ("select s", 8), ("share", 6)]
    lines = [head, "  ".join(f"{n:>{w}}" if i else f"{n:<{w}}" for i, (n, w) in enumerate(cols))]
    for arm, a in results["arms"].items():
        first = a["curve"][0]
        reach = "-" if a["reach_iteration"] is None else str(a["reach_iteration"])
        if arm == results.get("reference_arm"):
            speed = "ref"
        elif a["speedup"] is not None:
            speed = f"{a['speedup']:.2f}x"
        elif a["reach_iteration"] == 0:
            speed = "at init"
        else:
            speed = "-"
        cells = [arm, _pct(first["mean"], first["std"]), _pct(a["final"]["mean"], a["final"]["std"]), reach, speed,
                 f"{a['wall_seconds']:.1f}", f"{a['distill_seconds']:.1f}", f"{a['select_seconds']:.1f}",
                 f"{100 * a['select_share']:.0f}%"]
        lines.append("  ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, (_, w)) in enumerate(zip(cells, cols))))
    lines.append("reach it: first evaluated iteration whose mean accuracy >= the random arm's final mean; "
                 "speed-up = random's iterations / reach it; share = selection time / distillation time "
                 "(evaluation excluded)")
    if results.get("paired"):
        lines += ["", format_paired(results["paired"], its)]
    return "\n".join(lines)


def _ci(p: dict[str, Any]) -> str:
    if p["low"] is None:
        return f"{100 * p['mean']:+.2f}"
    return f"{100 * p['mean']:+.2f} [{100 * p['low']:+.2f}, {100 * p['high']:+.2f}]"


def format_paired(paired: list[dict[str, Any]], its: list[int]) -> str:
    """Matching-only pairs: per-seed differences (points), their mean and 95% t-interval."""
    n = paired[0]["final"]["n"]
    mid = its[len(its) // 2]
    lines = [f"matching only (same initialisation): treatment - reference, accuracy points, mean [95% t-interval] "
             f"over {n} seed(s)"]
    cols = [("treatment - reference", 24), (f"diff@{mid}", 22), (f"diff@{its[-1]}", 22), ("reach it t/r", 12),
            ("half-budget test", 30)]
    lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols)))
    for pair in paired:
        at_mid = next(p for p in pair["points"] if p["iteration"] == mid)
        reach = pair["reach_mean_curve"]
        r = "/".join("-" if v is None else str(v) for v in (reach["treatment"], reach["reference"]))
        h = pair["half_budget"]
        cells = [f"{pair['treatment']} - {pair['reference']}", _ci(at_mid), _ci(pair["final"]), r,
                 f"{_ci(h)} ({h['verdict']})"]
        lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, cols))))
    h = paired[0]["half_budget"]
    lines.append(f"reach it t/r: first iteration where the seed-mean curve of the treatment / the reference reaches "
                 f"the reference's final seed-mean accuracy; half-budget test: treatment at iteration {h['iteration']} "
                 f"minus reference at {h['of']} (above zero: the reference's final accuracy in at most half the "
                 "iterations)")
    return "\n".join(lines)


def save_curves(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs iteration per arm (mean with a ±std band), random's final mean as a dashed line."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    for arm, a in results["arms"].items():
        xs = [p["iteration"] for p in a["curve"]]
        mean = [100 * p["mean"] for p in a["curve"]]
        std = [100 * p["std"] for p in a["curve"]]
        line, = ax.plot(xs, mean, marker="o", label=arm)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.15)
    if results.get("target_accuracy") is not None:
        ax.axhline(100 * results["target_accuracy"], color="gray", linestyle="--", linewidth=1,
                   label="random, final")
    cfg = results["config"]
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['method'].upper()} on {results['resolved']['dataset_name']}, ipc {cfg['ipc']} "
                 f"({cfg['eval']['nets']} nets x {cfg['seeds']} seed(s), ±std)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def save_grids(synthetic: dict[str, torch.Tensor | None], data: ImageDataset, ipc: int, out_dir: Path) -> dict[str, str]:
    """``synthetic_<arm>.png``: the denormalised synthetic set, one row per class."""
    from torchvision.utils import make_grid, save_image

    files = {}
    for arm, x in synthetic.items():
        if x is None:
            continue
        images = data.denormalize(x.float().cpu()).clamp(0, 1)
        grid = make_grid(images, nrow=ipc, padding=1, pad_value=1.0)
        name = f"synthetic_{arm_file_name(arm)}.png"
        save_image(grid, out_dir / name)
        files[f"synthetic_{arm}"] = name
    return files
