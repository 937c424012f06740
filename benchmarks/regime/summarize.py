"""The regime map's table (docs/findings.md) from `dream-plugin ab` output folders.

Usage (from the repository root): python -m benchmarks.regime.summarize CELL [CELL ...]
A CELL is one output folder, or several joined by '+' (e.g. wt-mse+wt-mse-s34+wt-mse-dream): runs of
one configuration that differ only in their arms and seeds, pooled by (arm, seed) -- the runs are
deterministic, so an arm run later for the same seeds pairs with the arms run before.
One row per matching-only pair of each cell: the cell (folder name), distance, batch_real, seeds,
the matching network's test accuracy (mean over the end of every outer iteration, reference arm),
the reference's curve (acc@0, best point, final; "declines" when its final mean is below its best),
the paired difference at every evaluation after 0 and the half-budget test (mean [95% t-interval],
accuracy points), and the wall time of the whole command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.idc.summarize import ci
from dream_plugin.harness.ab.paired import compare_pair, matching_pairs

POOLED_ANYWAY = ("arms", "seed", "seeds", "out", "jobs", "progress", "cache")
"""Config keys that may differ between the folders of one cell."""


def live_accuracy(runs: list[dict]) -> str:
    ends = [p["acc"] for run in runs for p in run.get("matching_network", []) if p["moment"] == "end"]
    if not ends:
        return "-"
    return f"{100 * sum(ends) / len(ends):.1f} ({100 * min(ends):.1f}–{100 * max(ends):.1f})"


def load_cell(spec: str) -> tuple[str, dict[str, Any]]:
    """(cell name, results) of ``spec``: one folder's results.json, or several pooled by (arm, seed)."""
    folders = [Path(p) for p in spec.split("+")]
    if len(folders) > 1:  # later folders are named relative to the first one's parent
        folders = [folders[0]] + [f if f.is_absolute() or f.exists() else folders[0].parent / f for f in folders[1:]]
    results = [json.loads((f / "results.json").read_text()) for f in folders]
    if len(results) == 1:
        return folders[0].name, results[0]
    base = {k: v for k, v in results[0]["config"].items() if k not in POOLED_ANYWAY}
    for f, res in zip(folders[1:], results[1:]):
        other = {k: v for k, v in res["config"].items() if k not in POOLED_ANYWAY}
        diff = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        if diff:
            raise SystemExit(f"{f}: its config differs from {folders[0]}'s in {', '.join(diff)}; not one cell")
    arms: dict[str, Any] = {}
    for res in results:
        for name, arm in res["arms"].items():
            slot = arms.setdefault(name, {"runs": {}})
            for run in arm["runs"]:
                slot["runs"][run["seed"]] = run
    iterations = results[0]["eval_iterations"]
    per_seed = {a: {s: [float(np.mean(p["accs"])) for p in run["curve"]] for s, run in v["runs"].items()}
                for a, v in arms.items()}
    for name, arm in arms.items():
        curves = np.array([per_seed[name][s] for s in sorted(per_seed[name])])
        arm["runs"] = [arm["runs"][s] for s in sorted(arm["runs"])]
        arm["curve"] = [{"iteration": it, "mean": float(curves[:, i].mean())} for i, it in enumerate(iterations)]
    paired = [compare_pair(t, r, per_seed, iterations) for t, r in matching_pairs(list(arms))]
    return "+".join(f.name for f in folders), {
        "config": results[0]["config"], "arms": arms, "paired": paired,
        "total_seconds": sum(r["total_seconds"] for r in results),
    }


def rows(spec: str) -> list[str]:
    name, res = load_cell(spec)
    cfg = res["config"]
    out = []
    for pair in res["paired"]:
        t, r = pair["treatment"], pair["reference"]
        ref = res["arms"][r]
        runs = [run for run in ref["runs"] if run["seed"] in pair["seeds"]]  # the pair's seeds only
        curve = {p["iteration"]: float(np.mean([np.mean(run["curve"][i]["accs"]) for run in runs]))
                 for i, p in enumerate(runs[0]["curve"])}
        best_it = max(curve, key=lambda it: curve[it])
        final_it = max(curve)
        declines = curve[final_it] < curve[best_it]
        ref_text = (f"{100 * curve[0]:.2f} → best {100 * curve[best_it]:.2f} @{best_it} → final "
                    f"{100 * curve[final_it]:.2f}" + (" (declines)" if declines else ""))
        points = "; ".join(f"@{p['iteration']} {ci(p)}" for p in pair["points"][1:])
        h = pair["half_budget"]
        out.append(f"| {name} | {cfg['idc']['metric']} | {cfg.get('lr_img')} | {cfg['batch_real']} | "
                   f"{len(pair['seeds'])} | {live_accuracy(ref['runs'])} | {t} − {r} | {ref_text} | {points} | "
                   f"{ci(h)} ({h['verdict']}) | {res['total_seconds'] / 60:.0f} min |")
    return out


def main(argv: list[str]) -> int:
    print("| cell | distance | lr_img | batch_real | seeds | matching net acc % (range) | pair | reference: "
          "acc@0 → best → final | difference at each evaluation after 0 | half-budget test | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        for line in rows(arg):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
