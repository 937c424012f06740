"""The A/B report on hand-made curves: the table's notes on the reference arm, the curves' markers and
ticks, the synthetic grids' titles and labels."""

from __future__ import annotations

import pytest
import torch

from dream_plugin.harness.ab import build_config
from dream_plugin.harness.ab.aggregate import aggregate, speedup
from dream_plugin.harness.ab.arm import RunResult
from dream_plugin.harness.ab.report import curves_figure, format_table, grid_figure, save_grids

ITS = [0, 10, 20]


def results_of(curves: dict[str, list[float]]) -> dict:
    """What ``run_ab`` reports for arms whose every evaluation network scored ``curves[arm]``."""
    cfg = build_config({"dataset": "digits", "arms": list(curves), "iterations": ITS[-1], "eval_at": ITS,
                        "eval": {"nets": 2}, "progress": False, "device": "cpu"})
    runs = [RunResult(arm, 0, curve=[{"iteration": it, "accs": [acc, acc]} for it, acc in zip(ITS, accs)],
                      wall_seconds=2.0, eval_seconds=1.0) for arm, accs in curves.items()]
    return {"config": cfg.to_dict(), "resolved": {"dataset_name": "digits"},
            "environment": {"device": "cpu", "torch_threads": 1}, **aggregate(cfg, runs)}


def row(table: str, arm: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(arm + " "))


def test_table_flags_a_reference_that_declines_with_its_best_point():
    res = results_of({"random": [0.60, 0.70, 0.65], "dream": [0.62, 0.66, 0.72]})
    assert res["reference_decline"] == {"best_iteration": 10, "best_mean": 0.70, "final_iteration": 20,
                                        "final_mean": 0.65}
    table = format_table(res)
    assert ("note: the reference arm random declines: its final mean 65.00% at iteration 20 is below its best "
            "earlier mean 70.00% at iteration 10") in table
    rising = results_of({"random": [0.60, 0.65, 0.70], "dream": [0.62, 0.66, 0.72]})
    assert rising["reference_decline"] is None and "declines" not in format_table(rising)


def test_an_arm_starting_where_the_reference_starts_is_never_at_init():
    # match-only starts from random's picks; random loses accuracy, so its final mean is reached at iteration 0
    res = results_of({"random": [0.66, 0.70, 0.62], "dream": [0.70, 0.72, 0.73], "match-only": [0.66, 0.64, 0.63]})
    m = res["arms"]["match-only"]
    assert m["reach_iteration"] == 0 and m["speedup"] is None and m["same_start"] is True
    assert "only means random declined, not a speed-up" in m["speedup_note"]
    table = format_table(res)
    assert ("note: the reference arm random declines: its final mean 62.00% at iteration 20 is below its best "
            "earlier mean 70.00% at iteration 10") in table
    assert "ref fell" in row(table, "match-only") and "at init" not in row(table, "match-only")
    assert "at init" in row(table, "dream")  # a better start is still a start above random's final
    assert ("ref fell: match-only starts where random starts (66.00% at iteration 0) and random's final mean 62.00% "
            "declined below that start: reaching it at iteration 0 is no speed-up") in table
    flat = results_of({"random": [0.66, 0.70, 0.66], "match-only": [0.66, 0.64, 0.63]})
    assert "did not rise above that start" in format_table(flat)
    # the rule itself: an equal start reaching the target at 0 is no speed-up; a higher start is "at init"
    curve = [{"iteration": 0, "mean": 0.66}, {"iteration": 10, "mean": 0.6}]
    assert speedup(curve, 0.62, 10, reference_start=0.66).get("same_start") is True
    assert "same_start" not in speedup(curve, 0.62, 10, reference_start=0.60)


def test_curves_keep_identical_arms_visible_and_tick_the_evaluation_points():
    same = [0.60, 0.65, 0.70]
    res = results_of({"random": same, "dream": [0.62, 0.66, 0.72], "init-only": same, "match-only": same})
    ax = curves_figure(res).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    arms = [lines[a] for a in res["arms"]]
    styles = {(ln.get_marker(), ln.get_linestyle(), ln.get_markersize()) for ln in arms}
    assert len(styles) == len(arms)  # no two arms drawn alike
    assert all(ln.get_marker() not in (None, "", "None") for ln in arms)
    assert all(ln.get_markerfacecolor() == "none" for ln in arms)  # hollow: a marker under another shows through
    assert list(ax.get_xticks()) == ITS


def test_synthetic_grids_are_titled_with_the_arm_and_labelled_by_class(tmp_path):
    from dream_plugin.harness.data import load_dataset

    data = load_dataset("digits")
    ipc = 3
    x = data.train_images[:data.num_classes * ipc]
    ax = grid_figure("match-only", data.denormalize(x).clamp(0, 1), ipc, data.num_classes).axes[0]
    assert "match-only" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"class {c}" for c in range(data.num_classes)]
    files = save_grids({"dream": x, "random": None}, data, ipc, tmp_path)
    assert files == {"synthetic_dream": "synthetic_dream.png"} and (tmp_path / "synthetic_dream.png").stat().st_size > 1000


@pytest.mark.parametrize("decline", [None, {"best_iteration": 0, "best_mean": 0.5, "final_iteration": 20,
                                            "final_mean": 0.4}])
def test_table_of_an_older_results_file_still_formats(decline):
    res = results_of({"random": [0.5, 0.45, 0.4], "match-only": [0.5, 0.45, 0.44]})
    res["arms"]["match-only"].pop("same_start")
    if decline is None:
        res.pop("reference_decline")
    assert "match-only" in format_table(res)


def test_table_columns_stay_aligned_for_long_arm_names():
    res = results_of({"random": [0.5, 0.6, 0.7], "match:precomputed": [0.5, 0.6, 0.7]})
    lines = format_table(res).splitlines()
    header, rows = lines[1], [row(format_table(res), "random"), row(format_table(res), "match:precomputed")]
    edge = header.index(f"acc@{ITS[0]}") + len(f"acc@{ITS[0]}")
    assert [line.index("±") + len("± 0.00") for line in rows] == [edge, edge]
