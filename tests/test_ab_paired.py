"""Paired matching-only statistics of ``dream-plugin ab``, checked against hand computations."""

from __future__ import annotations

import math

import pytest

from dream_plugin.harness.ab.paired import (
    compare_pair, half_budget_point, matching_pairs, reach_iteration, t_interval, verdict,
)
from dream_plugin.harness.ab.report import format_paired

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_pairs_are_the_arms_that_differ_only_in_matching():
    arms = ["random", "dream", "init-only", "match-only", "dream+", "herding", "kcenter"]
    assert matching_pairs(arms) == [("match-only", "random"), ("dream", "init-only"), ("dream+", "dream"),
                                    ("dream+", "init-only")]
    assert matching_pairs(["dream", "random"]) == []  # they differ in init as well
    assert matching_pairs(["init-only", "dream"]) == [("dream", "init-only")]


def test_t_interval_by_hand():
    diffs = [0.01, 0.03, 0.02]
    ci = t_interval(diffs)
    mean = 0.02
    sd = math.sqrt(((0.01 - mean) ** 2 + (0.03 - mean) ** 2 + 0) / 2)  # = 0.01
    half = T_975_DF2 * sd / math.sqrt(3)
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(mean) and ci["sd"] == pytest.approx(0.01)
    assert ci["low"] == pytest.approx(mean - half) and ci["high"] == pytest.approx(mean + half)
    assert verdict(ci) == "includes zero"  # 0.02 ± 0.0248
    assert verdict(t_interval([0.05, 0.06, 0.055])) == "above zero"
    assert verdict(t_interval([-0.05, -0.06, -0.055])) == "below zero"
    one = t_interval([0.5])
    assert one["low"] is None and verdict(one) == "one seed: no interval"


def test_compare_pair_by_hand():
    its = [0, 5, 10]
    per_seed = {
        "dream": {0: [0.80, 0.90, 0.92], 1: [0.81, 0.91, 0.93], 2: [0.80, 0.88, 0.90], 7: [0.1, 0.1, 0.1]},
        "init-only": {0: [0.80, 0.86, 0.90], 1: [0.81, 0.87, 0.92], 2: [0.80, 0.86, 0.89]},
    }
    pair = compare_pair("dream", "init-only", per_seed, its)
    assert pair["seeds"] == [0, 1, 2]  # seed 7 has no partner
    final = pair["final"]
    assert final["per_seed"] == pytest.approx([0.02, 0.01, 0.01])
    mean, sd = 0.04 / 3, math.sqrt(((0.02 - 0.04 / 3) ** 2 + 2 * (0.01 - 0.04 / 3) ** 2) / 2)
    assert final["mean"] == pytest.approx(mean)
    assert final["low"] == pytest.approx(mean - T_975_DF2 * sd / math.sqrt(3))
    assert pair["points"][0]["per_seed"] == pytest.approx([0.0, 0.0, 0.0])
    # half-budget test: dream at 5 vs init-only at 10 -> 0.90-0.90, 0.91-0.92, 0.88-0.89
    h = pair["half_budget"]
    assert h["iteration"] == 5 and h["of"] == 10
    assert h["per_seed"] == pytest.approx([0.0, -0.01, -0.01])
    # reach: per seed, first iteration at or above the reference's own final accuracy
    assert [(r["treatment"], r["reference"]) for r in pair["reach"]] == [(5, 10), (10, 10), (10, 10)]
    mc = pair["reach_mean_curve"]
    assert mc["target"] == pytest.approx((0.90 + 0.92 + 0.89) / 3)
    assert (mc["treatment"], mc["reference"]) == (10, 10)  # dream's mean at 5 is 0.8967 < 0.9033
    text = format_paired([pair], its)
    assert "dream - init-only" in text and "half-budget" in text


def test_reach_and_half_budget_rules():
    assert reach_iteration([0.5, 0.7, 0.8], [0, 50, 100], 0.7) == 50
    assert reach_iteration([0.5, 0.6], [0, 10], 0.9) is None
    assert half_budget_point([0, 2, 5, 10]) == 5
    assert half_budget_point([0, 25, 50, 75, 100]) == 50
    assert half_budget_point([0, 3, 7, 15, 30]) == 15
    assert half_budget_point([0, 10]) == 0


def test_half_budget_test_flags_a_declining_reference():
    """Beating a reference whose accuracy falls after half the budget is not reaching it faster."""
    its = [0, 5, 10]
    per_seed = {"dream": {s: [0.9, 0.88 + d, 0.85] for s, d in enumerate((0.0, 0.01, 0.02))},
                "init-only": {s: [0.9, 0.87, 0.80 + d] for s, d in enumerate((0.0, 0.005, 0.01))}}
    h = compare_pair("dream", "init-only", per_seed, its)["half_budget"]
    assert h["low"] > 0 and h["reference_declines"]
    assert h["verdict"] == "above zero, but the reference declines: not a speed-up"


def _pair(treatment: str, reference: str, its: list[int], t: list[float], r: list[float]) -> dict:
    per_seed = {treatment: {0: t, 1: [v + 0.01 for v in t]}, reference: {0: r, 1: [v + 0.01 for v in r]}}
    return compare_pair(treatment, reference, per_seed, its)


def test_paired_table_with_two_evaluation_points_has_one_difference_column():
    text = format_paired([_pair("match-only", "random", [0, 1], [0.5, 0.6], [0.5, 0.55])], [0, 1])
    header = text.splitlines()[1]
    assert header.count("diff@1") == 1 and "diff@0" not in header
    three = format_paired([_pair("match-only", "random", [0, 5, 10], [0.5, 0.6, 0.7], [0.5, 0.55, 0.6])], [0, 5, 10])
    assert "diff@5" in three and "diff@10" in three


def test_paired_table_marks_a_reference_that_did_not_rise_above_its_start():
    its = [0, 5, 10]
    flat = format_paired([_pair("match-only", "random", its, [0.5, 0.6, 0.6], [0.5, 0.52, 0.49])], its)
    row = next(line for line in flat.splitlines() if line.startswith("match-only - random"))
    assert "0/0 *" in row and "says nothing about speed" in flat
    rising = format_paired([_pair("match-only", "random", its, [0.5, 0.6, 0.7], [0.5, 0.55, 0.6])], its)
    assert " *" not in rising and "says nothing" not in rising


def test_paired_table_columns_stay_aligned_for_long_arm_names():
    its = [0, 5, 10]
    pairs = [_pair("match:a-long-strategy-name", "match-only", its, [0.5, 0.6, 0.7], [0.5, 0.55, 0.6]),
             _pair("match-only", "random", its, [0.5, 0.6, 0.7], [0.5, 0.55, 0.6])]
    lines = format_paired(pairs, its).splitlines()
    header, rows = lines[1], lines[2:4]
    assert len({line.index("+") for line in rows}) == 1  # the first difference starts in one column
    right_edge = header.index("diff@5") + len("diff@5")  # cells are right-aligned under their header
    assert [line.index("]") + 1 for line in rows] == [right_edge, right_edge]
