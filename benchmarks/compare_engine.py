"""Time the engine's own rows (the ``ours`` contenders of ``--sections engine``) against another
checkout of dream-plugin: a regression check for engine changes.

    python -m benchmarks.compare_engine --baseline ../dream-plugin-old [--rounds 2] [--repeats 3]

Both sides cluster the same tensors (made once here, from the engine section's data sets) in
fresh interpreters that alternate: round r runs the baseline, then this checkout. A side is each
checkout's ``dream_plugin`` found through ``PYTHONPATH`` (checked: the child reports which one it
imported). The table gives the median over rounds of each side's median time and the ratio
this / baseline; on a shared machine, run-to-run noise of a few per cent remains: ``--candidate``
set to the baseline itself (an A/A run) shows how much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .common import engine_data_sets, load

HERE = Path(__file__).resolve().parent
THIS = HERE.parent


def _commit(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown commit"


def _run_side(side: Path, data: str, out: str, repeats: int, threads: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(side), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, str(HERE / "engine_rows_child.py"), data, out, str(repeats)],
                   cwd=side, env=env, check=True)
    with open(out) as fh:
        res = json.load(fh)
    if not Path(res["dream_plugin"]).resolve().is_relative_to(side):
        raise RuntimeError(f"the child for {side} imported dream_plugin from {res['dream_plugin']}, not from {side}")
    return res["rows"]


def compare(baseline: Path, rounds: int, repeats: int, quick: bool, threads: int, candidate: Path = THIS) -> list[dict]:
    """Rows ``{row, baseline_s, this_s, ratio}``: medians over ``rounds`` alternating child runs of
    ``baseline`` and ``candidate`` (this checkout unless given)."""
    sets, ks, feats = engine_data_sets(quick)
    times: dict[str, dict[str, list[float]]] = {"baseline": {}, "this": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.pt")
        torch.save({"sets": sets, "ks": list(ks), "feats": feats, "ten_class_k": 64 if quick else 128}, data)
        for r in range(rounds):
            for name, side in (("baseline", baseline), ("this", candidate)):
                rows = _run_side(side, data, os.path.join(tmp, f"{name}-{r}.json"), repeats, threads)
                for row, s in rows.items():
                    times[name].setdefault(row, []).append(s)
                print(f"# round {r + 1}/{rounds}: {name} done ({load()})", flush=True)
    out = []
    for row, this_s in times["this"].items():
        if row in times["baseline"]:
            b, t = statistics.median(times["baseline"][row]), statistics.median(this_s)
            out.append({"row": row, "baseline_s": b, "this_s": t, "ratio": t / b})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, type=Path, help="root of the other dream-plugin checkout")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs per side (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per row inside a run, as in benchmarks.run")
    p.add_argument("--threads", type=int, default=1, help="threads of both sides (default 1)")
    p.add_argument("--candidate", type=Path, default=THIS,
                   help="the checkout to time against the baseline (default: this one; the baseline itself "
                        "gives an A/A run, i.e. the noise)")
    p.add_argument("--quick", action="store_true", help="the engine section's quick sizes")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    baseline, candidate = args.baseline.resolve(), args.candidate.resolve()
    for opt, path in (("--baseline", args.baseline), ("--candidate", args.candidate)):
        if not (path / "dream_plugin" / "__init__.py").is_file():
            p.error(f"{opt}: '{path}' holds no dream_plugin package; expected the root of a checkout")
    print(f"# engine rows: this ({_commit(candidate)}) / baseline ({_commit(baseline)}), {args.threads} thread(s), "
          f"{args.rounds} rounds; start {load()}")
    rows = compare(baseline, args.rounds, args.repeats, args.quick, args.threads, candidate)
    print("| row | baseline s | this s | this / baseline |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['baseline_s']:.4f} | {r['this_s']:.4f} | {r['ratio']:.2f} |")
    print(f"# end {load()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
