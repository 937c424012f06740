"""Aggregate the (arm, seed) runs of an A/B experiment: curves, final accuracy, speed-up, times."""

from __future__ import annotations

from typing import Any

import numpy as np

from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.paired import paired_report


def share(part: float, whole: float) -> float:
    if whole <= 0:
        return 0.0
    return float(min(1.0, max(0.0, part / whole)))


def aggregate(cfg: AbConfig, runs: list[Any]) -> dict[str, Any]:
    """Per arm: curves (mean/std over nets and seeds), final accuracy, speed-up vs random, times."""
    its = cfg.eval_iterations
    arms: dict[str, Any] = {}
    for arm in cfg.arms:
        mine = [r for r in runs if r.arm == arm]
        curve = []
        for i, it in enumerate(its):
            accs = [a for r in mine for a in r.curve[i]["accs"]]
            per_seed = [float(np.mean(r.curve[i]["accs"])) for r in mine]
            curve.append({"iteration": it, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                          "n": len(accs), "per_seed_mean": per_seed})
        wall = [r.wall_seconds for r in mine]
        dist = [r.distill_seconds for r in mine]
        sel = [r.select_seconds for r in mine]
        samp = [r.sample_seconds for r in mine]
        settings = cfg.arm_settings(arm, cfg.seed).to_dict()
        settings.pop("seed", None)
        arms[arm] = {
            "strategy": settings["strategy"],
            "init_strategy": settings["init"]["strategy"],
            "selector_settings": settings,
            "curve": curve,
            "final": {"iteration": its[-1], "mean": curve[-1]["mean"], "std": curve[-1]["std"]},
            "wall_seconds": float(np.mean(wall)),
            "distill_seconds": float(np.mean(dist)),
            "eval_seconds": float(np.mean([r.eval_seconds for r in mine])),
            "select_seconds": float(np.mean(sel)),
            "sample_seconds": float(np.mean(samp)),
            "select_share": share(sum(sel), sum(dist)),
            "sample_share": share(sum(samp), sum(dist)),
            "selections": int(np.mean([r.selections for r in mine])),
            "reclusterings": int(np.mean([r.reclusterings for r in mine])),
            "runs": [r.as_dict() for r in mine],
        }
    reference = "random" if "random" in arms else None
    target = arms[reference]["final"]["mean"] if reference else None
    ref_start = arms[reference]["curve"][0] if reference else None
    for arm, a in arms.items():
        start = ref_start if arm != reference and ref_start is not None and ref_start["iteration"] == 0 else None
        a.update(speedup(a["curve"], target, its[-1], reference_start=None if start is None else start["mean"]))
        if arm == reference:  # its own final mean is the target: a ratio would only measure its noise
            a["speedup"] = None
            a["speedup_note"] = f"reference arm (its final mean {target:.4f} is the target); " + a["speedup_note"]
    return {"eval_iterations": its, "reference_arm": reference, "target_accuracy": target,
            "reference_decline": decline(arms[reference]["curve"]) if reference else None, "arms": arms,
            "paired": paired_report(runs, cfg.arms, its)}


def decline(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where a curve's final mean lies below its best earlier evaluated mean: the best point and the
    final one (``{"best_iteration", "best_mean", "final_iteration", "final_mean"}``); None if it does not."""
    if len(curve) < 2:
        return None
    final = curve[-1]
    best = max(curve[:-1], key=lambda p: p["mean"])  # the earliest of equal bests
    if best["mean"] <= final["mean"]:
        return None
    return {"best_iteration": best["iteration"], "best_mean": best["mean"],
            "final_iteration": final["iteration"], "final_mean": final["mean"]}


def speedup(curve: list[dict[str, Any]], target: float | None, budget: int,
            reference_start: float | None = None) -> dict[str, Any]:
    """The first evaluated iteration whose mean reaches ``target`` (random's final mean) and
    ``budget`` / that iteration.

    ``reference_start`` is the reference's iteration-0 mean: an arm that starts exactly there and
    reaches the target at iteration 0 does so only because the reference ended at or below its own
    start (``same_start``: no speed-up, not "at init")."""
    if target is None:
        return {"reach_iteration": None, "speedup": None, "speedup_note": "no random arm to compare with"}
    for point in curve:
        if point["mean"] >= target - 1e-12:
            it = point["iteration"]
            if it == 0:
                if reference_start is not None and abs(point["mean"] - reference_start) <= 1e-12:
                    fell = "declined" if target < reference_start else "did not gain"
                    return {"reach_iteration": 0, "speedup": None, "same_start": True,
                            "speedup_note": f"starts where random starts ({reference_start:.4f} at iteration 0) and "
                                            f"random's final mean is {target:.4f}: reaching it at iteration 0 only "
                                            f"means random {fell}, not a speed-up"}
                return {"reach_iteration": 0, "speedup": None,
                        "speedup_note": "reaches random's final accuracy already at iteration 0 (initialisation)"}
            return {"reach_iteration": it, "speedup": budget / it,
                    "speedup_note": f"reaches random's final mean {target:.4f} at iteration {it}; {budget}/{it}"}
    return {"reach_iteration": None, "speedup": None,
            "speedup_note": f"does not reach random's final mean {target:.4f} within {budget} iterations"}


