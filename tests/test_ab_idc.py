"""The IDC-style loop of ``dream-plugin ab --method idc``, at tiny size on the 8x8 digits."""

from __future__ import annotations

import math

import pytest
import torch

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.distances import idc_match_loss
from dream_plugin.harness.ab.methods import idc as idc_loop
from dream_plugin.harness.ab.methods.idc import real_batch_indices
from dream_plugin.core.config import ConfigError
from dream_plugin.harness.mosaic import decode_synset, mosaic, unmosaic

TINY_IDC = {
    "method": "idc",
    "dataset": "digits",
    "ipc": 1,
    "iterations": 2,
    "eval_points": 2,
    "batch_real": 8,
    "interval": 2,
    "subsample": 2,
    "model": {"width": 8},
    "idc": {"factor": 2, "inner_loop": 3, "n_data": 32, "batch_net": 16},
    "eval": {"nets": 1, "epochs": 4},
    "device": "cpu",
    "threads": 1,
    "progress": False,
}


def tiny(**changes):
    data = {**TINY_IDC, **changes}
    return build_config(data)


@pytest.fixture(scope="module")
def idc_run():
    return run_ab(tiny(arms=["dream", "dream+", "match-only", "random", "init-only"]), write=False, log=None)


def test_idc_loop_runs_and_records_the_matching_network(idc_run):
    res = idc_run
    assert res["config"]["method"] == "idc" and res["eval_iterations"] == [0, 2]
    for arm, a in res["arms"].items():
        run = a["runs"][0]
        assert math.isfinite(run["loss_last"]) and run["loss_last"] >= 0
        # live accuracy of the matching network at the start and the end of every outer iteration
        live = run["matching_network"]
        assert [(p["iteration"], p["moment"]) for p in live] == [(0, "start"), (0, "end"), (1, "start"), (1, "end")]
        assert all(0.0 <= p["acc"] <= 1.0 for p in live)
        # init (ipc * factor**2 picks per class) + one matching batch per class and inner step
        assert a["selections"] == 10 * 1 + 10 * 2 * 3
    # the inner-step counter restarts every outer iteration: DREAM clusters at inner steps 0 and 2 of
    # both rounds (interval 2, 3 inner steps), plus once per class at init
    assert res["arms"]["dream"]["reclusterings"] == 10 * (1 + 2 * 2)
    assert res["arms"]["random"]["reclusterings"] == 0


def test_matching_network_is_the_same_in_every_arm(idc_run):
    """The network trains on random real batches that never go through the selection: its test
    accuracy at the start of each outer iteration (fresh, fix_iter 1) and at the end (after the
    updates) is the same in every arm only if the updates are."""
    runs = {arm: a["runs"][0]["matching_network"] for arm, a in idc_run["arms"].items()}
    starts = {arm: [p["acc"] for p in live if p["moment"] == "start"] for arm, live in runs.items()}
    assert len({tuple(v) for v in starts.values()}) == 1


def test_network_update_batches_are_identical_across_arms(monkeypatch):
    seen: dict[str, list[list[int]]] = {}
    current = {"arm": None}
    real = idc_loop.real_batch_indices

    def spy(seed, samples, total, batch, *parts):
        out = real(seed, samples, total, batch, *parts)
        seen.setdefault(current["arm"], []).extend(b.tolist() for b in out)
        return out

    monkeypatch.setattr(idc_loop, "real_batch_indices", spy)
    for arm in ("random", "dream"):
        current["arm"] = arm
        run_ab(tiny(arms=[arm]), write=False, log=None)
    assert seen["random"] == seen["dream"]
    # 2 outer iterations x 3 inner steps x ceil(32 / 16) batches of 16
    assert len(seen["random"]) == 2 * 3 * 2 and all(len(b) == 16 for b in seen["random"])


def test_real_batch_indices_are_a_function_of_their_arguments():
    a = real_batch_indices(3, 50, 40, 16, "update", 0, 1)
    b = real_batch_indices(3, 50, 40, 16, "update", 0, 1)
    assert [t.tolist() for t in a] == [t.tolist() for t in b]
    assert [len(t) for t in a] == [16, 16, 16, 2]
    assert sorted(torch.cat(a)[:40].tolist()) == list(range(40))  # a full permutation first
    assert [t.tolist() for t in real_batch_indices(3, 50, 40, 16, "update", 0, 2)] != [t.tolist() for t in a]
    assert real_batch_indices(3, 0, 40, 16) == []


def test_random_arm_is_identical_whether_other_arms_run_or_not(idc_run):
    alone = run_ab(tiny(arms=["random"]), write=False, log=None)

    def accs(res, arm):
        return [p["accs"] for p in res["arms"][arm]["runs"][0]["curve"]]

    assert accs(alone, "random") == accs(idc_run, "random")
    # same init within each pair of arms that differ only in matching
    arms = idc_run["arms"]
    assert arms["init-only"]["curve"][0]["mean"] == arms["dream"]["curve"][0]["mean"] == arms["dream+"]["curve"][0]["mean"]
    assert arms["match-only"]["curve"][0]["mean"] == arms["random"]["curve"][0]["mean"]


def test_idc_reports_matching_only_pairs(idc_run):
    pairs = {(p["treatment"], p["reference"]) for p in idc_run["paired"]}
    assert pairs == {("dream", "init-only"), ("dream+", "init-only"), ("dream+", "dream"), ("match-only", "random")}
    assert "matching only" in idc_run["table"]


def test_dream_plus_arm_sub_samples_matching_batches():
    cfg = tiny(arms=["dream+"])
    settings = cfg.arm_settings("dream+", 0)
    assert settings.strategy == "dream" and settings.init_strategy == "dream"
    assert settings.options["dream"]["subsample"] == 2
    with pytest.raises(ConfigError, match="subsample"):
        tiny(arms=["dream+"], subsample=3)  # 3 does not divide batch_real 8


def test_idc_config_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"idc\.factor"):
        tiny(idc={"factor": 0})
    with pytest.raises(ConfigError, match=r"idc\.metric"):
        tiny(idc={"metric": "cos"})
    with pytest.raises(ConfigError, match="ipc"):
        run_ab(tiny(ipc=60, idc={"factor": 2}), write=False, log=None)  # 240 picks > class size


def test_quick_preset_depends_on_the_method():
    q = build_config(None, {"method": "idc"}, quick=True)
    assert q.iterations == 4 and q.idc.inner_loop == 3
    assert build_config(None, {"method": "idc"}).iterations == 40
    assert build_config(None, {"method": "dm"}, quick=True).iterations == 20


def test_quick_idc_does_no_more_work_than_its_measured_time_and_defaults_stay():
    """--method idc --quick: per arm 12 inner steps (each a matching step per class and 2 network
    steps on real data) and 90 evaluation epochs, the work its --help time was measured with."""
    import argparse

    from dream_plugin.harness.ab.cli import add_ab_parser

    q = build_config(None, {"method": "idc"}, quick=True)
    assert q.iterations * q.idc.inner_loop == 12
    assert -(-q.idc.n_data // q.idc.batch_net) == 2
    assert len(q.eval_iterations) * q.eval.nets * q.eval.epochs == 3 * 2 * 15
    full = build_config(None, {"method": "idc"})  # the non-quick defaults are untouched
    assert (full.idc.inner_loop, full.idc.n_data, full.idc.batch_net, full.eval.epochs) == (10, 500, 128, 50)
    sub = argparse.ArgumentParser().add_subparsers()
    quick = next(a for a in add_ab_parser(sub)._actions if "--quick" in a.option_strings)
    assert "--method idc (4 outer iterations of 3 inner steps, 15 evaluation epochs)" in quick.help


# ---------------------------------------------------------------------------------------------- mosaic
def test_mosaic_then_unmosaic_round_trips_images_made_of_tiles():
    """Images constant on factor x factor blocks survive encode (nearest) + decode (nearest) exactly."""
    g = torch.Generator().manual_seed(0)
    for factor, side in ((2, 8), (3, 12), (2, 28)):
        small = torch.rand(3 * factor**2, 2, side // factor, side // factor, generator=g)
        big = small.repeat_interleave(factor, 2).repeat_interleave(factor, 3)
        decoded = unmosaic(mosaic(big, factor), factor, mode="nearest")
        assert torch.equal(decoded, big)


def test_unmosaic_puts_tile_k_of_image_m_at_k_ipc_plus_m():
    ipc, factor = 3, 2
    imgs = torch.arange(ipc * factor**2, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 6, 6).clone()
    decoded = unmosaic(mosaic(imgs, factor), factor)
    assert torch.equal(decoded, imgs)  # constant images decode to themselves, in order


def test_unmosaic_is_differentiable_and_decode_synset_repeats_labels():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    dx, dy = decode_synset(x, y, 2)
    assert dx.shape == (16, 1, 8, 8) and dy.tolist() == [0, 0, 1, 1] * 4
    dx.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="factor"):
        unmosaic(x, 0)


def test_idc_match_loss_skips_biases_and_the_classifier():
    conv = torch.ones(2, 1, 3, 3)
    g_syn = [conv, torch.ones(2), torch.ones(10, 4)]
    g_real = [torch.zeros(2, 1, 3, 3), torch.zeros(2), torch.zeros(10, 4)]
    assert float(idc_match_loss(g_syn, g_real, "l1")) == 18.0
    assert float(idc_match_loss([2 * conv], [conv], "mse")) == 18.0
    assert float(idc_match_loss(g_syn, g_real, "l1", fc=True, bias=True)) == 18.0 + 2 + 40


def test_parallel_jobs_give_the_numbers_of_one_job():
    """--jobs 2 runs (arm, seed) pairs in spawned processes; every run is seeded on its own."""
    cfg = tiny(arms=["random", "dream"], seeds=2, iterations=1, eval_points=2, idc={"factor": 1, "inner_loop": 1,
                                                                                    "n_data": 16, "batch_net": 16})
    one = run_ab(cfg, write=False, log=None)
    two = run_ab(build_config({**TINY_IDC, "arms": ["random", "dream"], "seeds": 2, "iterations": 1, "eval_points": 2,
                               "idc": {"factor": 1, "inner_loop": 1, "n_data": 16, "batch_net": 16}, "jobs": 2}),
                 write=False, log=None)

    def accs(res):
        return {(run["arm"], run["seed"]): [p["accs"] for p in run["curve"]]
                for a in res["arms"].values() for run in a["runs"]}

    assert accs(one) == accs(two) and len(accs(one)) == 4
    assert [(p["treatment"], p["reference"]) for p in two["paired"]] == []  # random vs dream differ in init too
