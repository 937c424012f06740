"""Aggregate the (arm, seed) runs of an A/B experiment: curves, final accuracy, speed-up, times."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import AbConfig
from .paired import paired_report


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
    for arm, a in arms.items():
        a.update(speedup(a["curve"], target, its[-1]))
        if arm == reference:  # its own final mean is the target: a ratio would only measure its noise
            a["speedup"] = None
            a["speedup_note"] = f"reference arm (its final mean {target:.4f} is the target); " + a["speedup_note"]
    return {"eval_iterations": its, "reference_arm": reference, "target_accuracy": target, "arms": arms,
            "paired": paired_report(runs, cfg.arms, its)}


def speedup(curve: list[dict[str, Any]], target: float | None, budget: int) -> dict[str, Any]:
    if target is None:
        return {"reach_iteration": None, "speedup": None, "speedup_note": "no random arm to compare with"}
    for point in curve:
        if point["mean"] >= target - 1e-12:
            it = point["iteration"]
            if it == 0:
                return {"reach_iteration": 0, "speedup": None,
                        "speedup_note": "reaches random's final accuracy already at iteration 0 (initialisation)"}
            return {"reach_iteration": it, "speedup": budget / it,
                    "speedup_note": f"reaches random's final mean {target:.4f} at iteration {it}; {budget}/{it}"}
    return {"reach_iteration": None, "speedup": None,
            "speedup_note": f"does not reach random's final mean {target:.4f} within {budget} iterations"}


