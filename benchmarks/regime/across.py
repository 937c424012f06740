"""Paired differences between arms of two cells of the regime map (docs/findings.md).

Usage (from the repository root):
  python -m benchmarks.regime.across CELL:ARM CELL:ARM [CELL:ARM CELL:ARM ...]
Each CELL is as in benchmarks.regime.summarize (a folder, or folders joined by '+'). The cells of
the map run the same seeds with the same initial synthetic sets, matching networks and evaluation
networks, so two arms of two cells pair by seed too; each pair prints the mean difference (first
minus second, accuracy points) with its 95% Student-t interval at every evaluation point.
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.idc.summarize import ci
from benchmarks.regime.summarize import load_cell
from dream_plugin.harness.ab.paired import t_interval


def seed_curves(spec: str) -> tuple[list[int], dict[int, list[float]]]:
    """(evaluation iterations, seed -> seed-mean accuracy curve) of ``CELL:ARM``."""
    cell, _, arm = spec.rpartition(":")
    _, res = load_cell(cell)
    if arm not in res["arms"]:
        raise SystemExit(f"{spec}: no arm {arm!r}; the cell has {', '.join(res['arms'])}")
    runs = res["arms"][arm]["runs"]
    iterations = [p["iteration"] for p in runs[0]["curve"]]
    return iterations, {run["seed"]: [float(np.mean(p["accs"])) for p in run["curve"]] for run in runs}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        raise SystemExit(__doc__)
    for first, second in zip(argv[::2], argv[1::2]):
        its_a, a = seed_curves(first)
        its_b, b = seed_curves(second)
        if its_a != its_b:
            raise SystemExit(f"{first} is evaluated at {its_a}, {second} at {its_b}: not comparable")
        seeds = sorted(set(a) & set(b))
        points = []
        for i, it in enumerate(its_a):
            if it == 0:
                continue
            points.append(f"@{it} " + ci(t_interval([a[s][i] - b[s][i] for s in seeds])))
        print(f"{first} − {second} ({len(seeds)} seeds): " + "; ".join(points))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
