"""Paired comparisons of arms that differ only in how the matching batches are chosen.

Two arms form a pair when they initialise the synthetic set with the same strategy and differ in
matching (``dream`` vs ``init-only``, ``match-only`` vs ``random``, ``dream+`` vs ``init-only`` and
vs ``dream``). Every arm runs with the same seeds, so a seed gives one paired difference
(treatment - reference, each the mean over its evaluation networks) at every evaluation point;
across seeds we report the mean difference with a two-sided 95% Student-t interval.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from dream_plugin.harness.ab.names import ARMS, arm_strategies

CONFIDENCE = 0.95


def arm_signature(arm: str) -> tuple[str, str]:
    """(init strategy, matching rule) of an arm; the matching rule tells dream+ from dream."""
    match, init = arm_strategies(arm) or (arm, arm)
    return init, ("dream+" if arm == "dream+" else match)


def matching_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(treatment, reference) for every two of ``arms`` that differ only in matching.

    The reference is the arm with random matching when one of the two has it, else the one listed
    first in :data:`~dream_plugin.harness.ab.names.ARMS` (named arms before the others, which keep their order).
    """
    order = list(ARMS) + [a for a in arms if a not in ARMS]
    pairs = []
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            (init_a, match_a), (init_b, match_b) = arm_signature(a), arm_signature(b)
            if init_a != init_b or match_a == match_b:
                continue
            if match_a == "random" or (match_b != "random" and order.index(a) < order.index(b)):
                ref, treat = a, b
            else:
                ref, treat = b, a
            pairs.append((treat, ref))
    return pairs


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample standard deviation and the Student-t interval of the mean (None for one value)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "low": None, "high": None, "confidence": confidence}
    sd = float(x.std(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "confidence": confidence}


def verdict(interval: Mapping[str, Any]) -> str:
    """'above zero' / 'below zero' when the interval excludes zero, else 'includes zero'."""
    if interval["low"] is None:
        return "one seed: no interval"
    if interval["low"] > 0:
        return "above zero"
    if interval["high"] < 0:
        return "below zero"
    return "includes zero"


def reach_iteration(curve: Sequence[float], iterations: Sequence[int], target: float) -> int | None:
    """The first evaluated iteration whose accuracy is at least ``target`` (None: never)."""
    for it, acc in zip(iterations, curve):
        if acc >= target - 1e-12:
            return int(it)
    return None


def half_budget_point(iterations: Sequence[int]) -> int:
    """The last evaluated iteration at or before half of the final one (the "half the iterations" test)."""
    final = iterations[-1]
    candidates = [it for it in iterations if it <= final / 2]
    return int(candidates[-1]) if candidates else int(iterations[0])


def compare_pair(
    treat: str, ref: str, per_seed: Mapping[str, Mapping[int, Sequence[float]]], iterations: Sequence[int],
) -> dict[str, Any]:
    """Paired statistics of one pair.

    ``per_seed[arm][seed]`` is the arm's seed-level accuracy (mean over evaluation networks) at each
    of ``iterations``. Seeds run by only one of the two arms are ignored.
    """
    seeds = sorted(set(per_seed[treat]) & set(per_seed[ref]))
    t = np.array([per_seed[treat][s] for s in seeds], dtype=np.float64)
    r = np.array([per_seed[ref][s] for s in seeds], dtype=np.float64)
    diff = t - r
    points = [{"iteration": int(it), "per_seed": diff[:, i].tolist(), **t_interval(diff[:, i])}
              for i, it in enumerate(iterations)]
    half = half_budget_point(iterations)
    h = list(iterations).index(half)
    half_diff = t[:, h] - r[:, -1]
    half_ci = t_interval(half_diff)
    declines = bool(r[:, -1].mean() < r[:, h].mean())
    half_verdict = verdict(half_ci)
    if declines and half_verdict == "above zero":
        half_verdict = "above zero, but the reference declines: not a speed-up"
    reach = []
    for k, s in enumerate(seeds):
        target = float(r[k, -1])
        reach.append({"seed": s, "target": target, "treatment": reach_iteration(t[k], iterations, target),
                      "reference": reach_iteration(r[k], iterations, target)})
    mean_target = float(r[:, -1].mean())
    return {
        "treatment": treat,
        "reference": ref,
        "seeds": seeds,
        "points": points,
        "final": points[-1],
        "reach": reach,
        "reach_mean_curve": {
            "target": mean_target,
            "treatment": reach_iteration(t.mean(0), iterations, mean_target),
            "reference": reach_iteration(r.mean(0), iterations, mean_target),
        },
        "half_budget": {
            "iteration": half,
            "of": int(iterations[-1]),
            "per_seed": half_diff.tolist(),
            **half_ci,
            "verdict": half_verdict,
            "reference_declines": declines,
            "note": f"treatment at iteration {half} minus reference at iteration {iterations[-1]}; above zero "
                    "means the treatment reaches the reference's final accuracy in at most half the iterations",
        },
    }


def paired_report(runs: Sequence[Any], arms: Sequence[str], iterations: Sequence[int]) -> list[dict[str, Any]]:
    """Every matching-only pair among ``arms``, from the (arm, seed) runs' curves."""
    per_seed: dict[str, dict[int, list[float]]] = {a: {} for a in arms}
    for run in runs:
        per_seed[run.arm][run.seed] = [float(np.mean(p["accs"])) for p in run.curve]
    return [compare_pair(t, r, per_seed, iterations) for t, r in matching_pairs(list(arms))]
