"""The A/B report: terminal table, accuracy-vs-iteration curves and grids of synthetic images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dream_plugin.harness.data import ImageDataset
from dream_plugin.harness.ab.names import arm_file_name


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
    cols = [("arm", max([11, *map(len, results["arms"])])), (f"acc@{its[0]}", 15), (f"final acc@{its[-1]}", 17), ("reach it", 8),
            ("speed-up", 8), ("wall s", 8), ("distill s", 9), ("select s", 8), ("share", 6)]
    lines = [head, "  ".join(f"{n:>{w}}" if i else f"{n:<{w}}" for i, (n, w) in enumerate(cols))]
    same_start: list[str] = []
    for arm, a in results["arms"].items():
        first = a["curve"][0]
        reach = "-" if a["reach_iteration"] is None else str(a["reach_iteration"])
        if arm == results.get("reference_arm"):
            speed = "ref"
        elif a["speedup"] is not None:
            speed = f"{a['speedup']:.2f}x"
        elif a.get("same_start"):  # reaches the target at 0 only because the reference fell back to its start
            speed = "ref fell"
            same_start.append(arm)
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
    lines += _reference_notes(results, same_start)
    if results.get("paired"):
        lines += ["", format_paired(results["paired"], its)]
    return "\n".join(lines)


def _reference_notes(results: dict[str, Any], same_start: list[str]) -> list[str]:
    """Lines under the table: a reference arm whose curve declines, and arms that start where it starts."""
    ref = results.get("reference_arm")
    if ref is None:
        return []
    lines = []
    fall = results.get("reference_decline")
    if fall is not None:
        lines.append(f"note: the reference arm {ref} declines: its final mean {100 * fall['final_mean']:.2f}% at "
                     f"iteration {fall['final_iteration']} is below its best earlier mean "
                     f"{100 * fall['best_mean']:.2f}% at iteration {fall['best_iteration']}, so 'reach it' and "
                     "'speed-up' compare with an accuracy the reference had already passed")
    if same_start:
        start = results["arms"][ref]["curve"][0]["mean"]
        final = results["arms"][ref]["final"]["mean"]
        fell = "declined below" if final < start else "did not rise above"
        lines.append(f"ref fell: {', '.join(same_start)} start{'s' if len(same_start) == 1 else ''} where {ref} "
                     f"starts ({100 * start:.2f}% at iteration 0) and {ref}'s final mean {100 * final:.2f}% "
                     f"{fell} that start: reaching it at iteration 0 is no speed-up")
    return lines


def _ci(p: dict[str, Any]) -> str:
    if p["low"] is None:
        return f"{100 * p['mean']:+.2f}"
    return f"{100 * p['mean']:+.2f} [{100 * p['low']:+.2f}, {100 * p['high']:+.2f}]"


def format_paired(paired: list[dict[str, Any]], its: list[int]) -> str:
    """Matching-only pairs: per-seed differences (points), their mean and 95% t-interval."""
    n = paired[0]["final"]["n"]
    mid = its[len(its) // 2]
    mid_column = mid != its[-1]  # with two evaluation points the middle one is the last
    lines = [f"matching only (same initialisation): treatment - reference, accuracy points, mean [95% t-interval] "
             f"over {n} seed(s)"]
    labels = [f"{pair['treatment']} - {pair['reference']}" for pair in paired]
    cols = [("treatment - reference", max([24, *map(len, labels)])), *([(f"diff@{mid}", 22)] if mid_column else []),
            (f"diff@{its[-1]}", 22), ("reach it t/r", 12), ("half-budget test", 30)]
    lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols)))
    flat = False
    for label, pair in zip(labels, paired):
        at_mid = next(p for p in pair["points"] if p["iteration"] == mid)
        reach = pair["reach_mean_curve"]
        r = "/".join("-" if v is None else str(v) for v in (reach["treatment"], reach["reference"]))
        if reach["reference"] == 0 and its[-1] > 0:  # the reference's final mean is not above its start
            r, flat = r + " *", True
        h = pair["half_budget"]
        cells = [label, *([_ci(at_mid)] if mid_column else []), _ci(pair["final"]), r, f"{_ci(h)} ({h['verdict']})"]
        lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, cols))))
    h = paired[0]["half_budget"]
    lines.append(f"reach it t/r: first iteration where the seed-mean curve of the treatment / the reference reaches "
                 f"the reference's final seed-mean accuracy; half-budget test: treatment at iteration {h['iteration']} "
                 f"minus reference at {h['of']} (above zero: the reference's final accuracy in at most half the "
                 "iterations)")
    if flat:
        lines.append("*: the reference's final seed-mean accuracy is not above its own start, so reaching it says "
                     "nothing about speed")
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def curves_figure(results: dict[str, Any]) -> Any:
    """The figure of :func:`save_curves` (a matplotlib ``Figure``, no pyplot state).

    Every arm has its own marker and line style, hollow markers shrinking arm by arm, so arms with
    identical curves stay visible on top of each other; x-ticks sit at the evaluation points."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    arms = results["arms"]
    for k, (arm, a) in enumerate(arms.items()):
        xs = [p["iteration"] for p in a["curve"]]
        mean = [100 * p["mean"] for p in a["curve"]]
        std = [100 * p["std"] for p in a["curve"]]
        line, = ax.plot(xs, mean, marker=MARKERS[k % len(MARKERS)], linestyle=LINESTYLES[k % len(LINESTYLES)],
                        markersize=max(3.0, 10.0 - 1.5 * k), markerfacecolor="none", markeredgewidth=1.3,
                        linewidth=1.4, label=arm, zorder=3 + k)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.15)
    if results.get("target_accuracy") is not None:
        ax.axhline(100 * results["target_accuracy"], color="gray", linestyle=(0, (2, 4)), linewidth=1,
                   label=f"{results.get('reference_arm') or 'random'}, final")
    its = results.get("eval_iterations") or sorted({p["iteration"] for a in arms.values() for p in a["curve"]})
    ax.set_xticks(its)
    if len(its) > 12:  # many evaluation points: keep the labels readable
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    cfg = results["config"]
    ax.set_xlabel("distillation iteration (ticks: evaluation points)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['method'].upper()} on {results['resolved']['dataset_name']}, ipc {cfg['ipc']} "
                 f"({cfg['eval']['nets']} nets x {cfg['seeds']} seed(s), ±std)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_curves(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs iteration per arm (mean with a ±std band), random's final mean as a dotted line."""
    curves_figure(results).savefig(path)


def grid_figure(arm: str, images: torch.Tensor, ipc: int, num_classes: int) -> Any:
    """A figure of one arm's synthetic set (denormalised, in [0, 1]): one row per class, titled with
    the arm and each row labelled with its class."""
    from matplotlib.figure import Figure
    from torchvision.utils import make_grid

    pad = 1
    grid = make_grid(images, nrow=ipc, padding=pad, pad_value=1.0)  # (C, H, W), rows of ipc images
    h = images.shape[-2] + pad
    rows = -(-images.shape[0] // ipc)
    pixels = grid.permute(1, 2, 0).numpy()
    dpi = 120
    scale = max(1.0, 48 / images.shape[-2])  # screen pixels per image pixel: small images are enlarged, none shrunk
    fig = Figure(figsize=(pixels.shape[1] * scale / dpi + 1.2, pixels.shape[0] * scale / dpi + 0.8), dpi=dpi)
    ax = fig.subplots()
    ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_yticks([pad + r * h + (h - pad) / 2 for r in range(rows)])
    ax.set_yticklabels([f"class {r}" if r < num_classes else "" for r in range(rows)], fontsize=7)
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"{arm}: synthetic set, {ipc} per class", fontsize=9)
    fig.tight_layout()
    return fig


def save_grids(synthetic: dict[str, torch.Tensor | None], data: ImageDataset, ipc: int, out_dir: Path) -> dict[str, str]:
    """``synthetic_<arm>.png``: the denormalised synthetic set, one row per class, titled with the arm
    and labelled by class."""
    files = {}
    for arm, x in synthetic.items():
        if x is None:
            continue
        images = data.denormalize(x.float().cpu()).clamp(0, 1)
        name = f"synthetic_{arm_file_name(arm)}.png"
        grid_figure(arm, images, ipc, data.num_classes).savefig(out_dir / name)
        files[f"synthetic_{arm}"] = name
    return files
