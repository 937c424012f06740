"""Markdown rows of the matching-only pairs of one or more `dream-plugin ab` output folders.

Usage: python benchmarks/idc/summarize.py OUT_DIR [OUT_DIR ...]
Each row: the run's name (folder), the pair, seeds, the difference at every evaluation after iteration 0 and the half-budget test
(mean [95% t-interval], accuracy points), the iterations to reach the reference's final accuracy
(seed-mean curves), and both arms' final accuracies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ci(p: dict) -> str:
    if p["low"] is None:
        return f"{100 * p['mean']:+.2f}"
    return f"{100 * p['mean']:+.2f} [{100 * p['low']:+.2f}, {100 * p['high']:+.2f}]"


def rows(folder: Path) -> list[str]:
    res = json.loads((folder / "results.json").read_text())
    out = []
    for pair in res["paired"]:
        t, r = pair["treatment"], pair["reference"]
        reach = pair["reach_mean_curve"]
        h = pair["half_budget"]
        fin_t, fin_r = res["arms"][t]["final"]["mean"], res["arms"][r]["final"]["mean"]
        points = "; ".join(f"@{p['iteration']} {ci(p)}" for p in pair["points"][1:])
        dash = lambda v: "-" if v is None else str(v)  # noqa: E731
        out.append(f"| {folder.name} | {t} − {r} | {len(pair['seeds'])} | {points} | "
                   f"{ci(h)} ({h['verdict']}) | {dash(reach['treatment'])} / {dash(reach['reference'])} of {h['of']} | "
                   f"{100 * fin_t:.2f} / {100 * fin_r:.2f} |")
    return out


def main(argv: list[str]) -> int:
    print("| run | pair | seeds | difference at each evaluation after 0 | half-budget test | reach it t / r | "
          "final acc t / r |")
    print("|---|---|---|---|---|---|---|")
    for arg in argv:
        for line in rows(Path(arg)):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
