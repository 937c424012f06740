"""The regime map's table (docs/findings.md) from `dream-plugin ab` output folders.

Usage (from the repository root): python -m benchmarks.regime.summarize OUT_DIR [OUT_DIR ...]
One row per matching-only pair of each folder: the cell (folder name), distance, batch_real, seeds,
the matching network's test accuracy (mean over the end of every outer iteration, reference arm),
the reference's curve (acc@0, best point, final; "declines" when its final mean is below its best),
the paired difference at every evaluation after 0 and the half-budget test (mean [95% t-interval],
accuracy points), and the wall time of the whole command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.idc.summarize import ci


def live_accuracy(runs: list[dict]) -> str:
    ends = [p["acc"] for run in runs for p in run.get("matching_network", []) if p["moment"] == "end"]
    if not ends:
        return "-"
    return f"{100 * sum(ends) / len(ends):.1f} ({100 * min(ends):.1f}–{100 * max(ends):.1f})"


def rows(folder: Path) -> list[str]:
    res = json.loads((folder / "results.json").read_text())
    cfg = res["config"]
    out = []
    for pair in res["paired"]:
        t, r = pair["treatment"], pair["reference"]
        ref = res["arms"][r]
        curve = {p["iteration"]: p["mean"] for p in ref["curve"]}
        best_it = max(curve, key=lambda it: curve[it])
        final_it = max(curve)
        declines = curve[final_it] < curve[best_it]
        ref_text = (f"{100 * curve[0]:.2f} → best {100 * curve[best_it]:.2f} @{best_it} → final "
                    f"{100 * curve[final_it]:.2f}" + (" (declines)" if declines else ""))
        points = "; ".join(f"@{p['iteration']} {ci(p)}" for p in pair["points"][1:])
        h = pair["half_budget"]
        out.append(f"| {folder.name} | {cfg['idc']['metric']} | {cfg.get('lr_img')} | {cfg['batch_real']} | "
                   f"{len(pair['seeds'])} | {live_accuracy(ref['runs'])} | {t} − {r} | {ref_text} | {points} | "
                   f"{ci(h)} ({h['verdict']}) | {res['total_seconds'] / 60:.0f} min |")
    return out


def main(argv: list[str]) -> int:
    print("| cell | distance | lr_img | batch_real | seeds | matching net acc % (range) | pair | reference: "
          "acc@0 → best → final | difference at each evaluation after 0 | half-budget test | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        for line in rows(Path(arg)):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
