"""End-to-end tests of the A/B harness (``dream-plugin ab``) on the 8x8 digits, tiny settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dream_plugin.harness.ab import ARMS, build_config, run_ab
from dream_plugin.harness.ab.augment import augment
from dream_plugin.harness.ab.evaluate import evaluate_synset
from dream_plugin.harness.ab.distances import match_loss
from dream_plugin.harness.ab.loops import seeded_net
from dream_plugin.harness.ab.aggregate import speedup
from dream_plugin.harness.ab.runner import load_data

ALL_ARMS = list(ARMS)
# random last, so the "random alone" comparison below also proves that the other arms leave nothing behind
ORDER = [a for a in ALL_ARMS if a != "random"] + ["random"]

TINY = {
    "dataset": "digits",
    "ipc": 2,
    "iterations": 4,
    "eval_points": 3,
    "batch_real": 12,
    "interval": 2,
    "model": {"width": 8},
    "eval": {"nets": 2, "epochs": 6},
    "device": "cpu",
    "threads": 1,  # tiny tensors: one thread avoids OpenMP overhead (and contention on a busy machine)
    "progress": False,
}


def tiny(**changes):
    data = {**TINY, **changes}
    return build_config(data)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab-all")
    results = run_ab(tiny(arms=ORDER), out=out, log=None)
    return out, results


def test_all_arms_write_results_curves_and_grids(full_run):
    out, results = full_run
    on_disk = json.loads((out / "results.json").read_text())
    assert set(on_disk) >= {"config", "environment", "eval_iterations", "arms", "reference_arm", "target_accuracy",
                            "table", "files", "total_seconds", "resolved"}
    assert (out / "curves.png").stat().st_size > 1000
    for arm in ORDER:
        assert (out / f"synthetic_{arm}.png").stat().st_size > 100
        assert on_disk["files"][f"synthetic_{arm}"] == f"synthetic_{arm}.png"
    env = on_disk["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["cpu_count"] >= 1
    assert "git_commit" in env
    assert on_disk["config"]["arms"] == ORDER
    assert on_disk["resolved"]["lr_img"] == 1.0  # dm's default


def test_results_are_consistent(full_run):
    _, results = full_run
    its = results["eval_iterations"]
    assert its == [0, 2, 4]
    assert results["reference_arm"] == "random"
    assert results["target_accuracy"] == results["arms"]["random"]["final"]["mean"]
    for arm, a in results["arms"].items():
        assert [p["iteration"] for p in a["curve"]] == its
        assert a["final"]["mean"] == a["curve"][-1]["mean"]
        assert a["final"]["iteration"] == its[-1]
        for p in a["curve"]:
            assert p["n"] == 2  # nets x seeds
            assert 0.0 <= p["mean"] <= 1.0 and p["std"] >= 0.0
        assert 0.0 <= a["select_share"] <= 1.0 and 0.0 <= a["sample_share"] <= 1.0
        assert a["wall_seconds"] >= a["distill_seconds"] >= 0.0
        assert a["select_seconds"] <= a["distill_seconds"] + 1e-9
        run = a["runs"][0]
        assert len(run["curve"]) == len(its) and all(len(p["accs"]) == 2 for p in run["curve"])
        # speed-up fields agree with the curve
        if a["reach_iteration"] is None:
            assert all(p["mean"] < results["target_accuracy"] for p in a["curve"])
        else:
            first = next(p["iteration"] for p in a["curve"] if p["mean"] >= results["target_accuracy"] - 1e-12)
            assert a["reach_iteration"] == first
            if arm == "random":
                assert a["speedup"] is None and a["speedup_note"].startswith("reference arm")
            elif first > 0:
                assert math.isclose(a["speedup"], its[-1] / first)
    assert results["arms"]["random"]["strategy"] == "random"
    assert results["arms"]["init-only"]["strategy"] == "random"
    assert results["arms"]["init-only"]["init_strategy"] == "dream"
    assert results["arms"]["match-only"]["init_strategy"] == "random"
    # every arm makes the same number of calls (init + iterations x classes); DREAM re-clusters
    calls = {a["selections"] for a in results["arms"].values()}
    assert calls == {10 * 1 + 10 * 4}
    assert results["arms"]["dream"]["reclusterings"] >= 10 * 2  # init + every `interval` matching calls
    assert results["arms"]["random"]["reclusterings"] == 0
    for arm in ORDER:
        assert arm in results["table"]


def test_arms_share_seeds(full_run, tmp_path):
    """The random arm's numbers do not depend on which other arms ran (before it or after it)."""
    _, results = full_run
    alone = run_ab(tiny(arms=["random"]), out=tmp_path / "a", log=None)
    pair = run_ab(tiny(arms=["random", "dream"]), out=tmp_path / "b", log=None)

    def accs(res, arm):
        return [p["accs"] for p in res["arms"][arm]["runs"][0]["curve"]]

    assert accs(alone, "random") == accs(pair, "random") == accs(results, "random")
    assert accs(pair, "dream") == accs(results, "dream")
    # init-only and match-only start from the same picks as dream and random respectively
    assert results["arms"]["init-only"]["curve"][0]["mean"] == results["arms"]["dream"]["curve"][0]["mean"]
    assert results["arms"]["match-only"]["curve"][0]["mean"] == results["arms"]["random"]["curve"][0]["mean"]


def test_evaluation_is_deterministic_on_cpu():
    cfg = tiny()
    data = load_data(cfg)
    x = data.train_images[:20]
    y = data.train_labels[:20]

    def make_net(s):
        return seeded_net(cfg, data.channels, data.num_classes, data.image_size, s, torch.device("cpu"))

    torch.manual_seed(123)  # the global generator must not matter
    a = evaluate_synset(x, y, data.test_images, data.test_labels, cfg, make_net, run_seed=7, iteration=3)
    torch.manual_seed(456)
    np.random.seed(9)
    b = evaluate_synset(x, y, data.test_images, data.test_labels, cfg, make_net, run_seed=7, iteration=3)
    assert a == b and len(a) == cfg.eval.nets
    dsa = build_config({**TINY, "dsa": True})
    c = evaluate_synset(x, y, data.test_images, data.test_labels, dsa, make_net, run_seed=7, iteration=3)
    d = evaluate_synset(x, y, data.test_images, data.test_labels, dsa, make_net, run_seed=7, iteration=3)
    assert c == d


def test_dc_with_batchnorm_and_dsa_runs(tmp_path):
    """Gradient matching, BatchNorm statistics batches through the adapter, Siamese augmentation."""
    cfg = tiny(method="dc", arms=["random", "dream"], iterations=2, eval_points=2, dsa=True,
               model={"width": 8, "norm": "batchnorm"}, dc={"outer_loop": 2, "inner_loop": 1})
    results = run_ab(cfg, out=tmp_path, log=None, write=False)
    assert results["resolved"]["lr_img"] == 0.1
    for a in results["arms"].values():
        assert len(a["curve"]) == 2
        assert math.isfinite(a["runs"][0]["loss_last"])
    # BN batches come from the host sampler in both arms (bn_batch: host); DREAM answers match calls
    assert results["arms"]["dream"]["reclusterings"] > 0


def test_noise_init_is_identical_across_arms(tmp_path):
    results = run_ab(tiny(arms=["random", "dream"], init="noise", iterations=1, eval_points=2), out=tmp_path,
                     log=None, write=False)
    r, d = (results["arms"][a]["runs"][0]["curve"][0]["accs"] for a in ("random", "dream"))
    assert r == d


def test_speedup_rules():
    curve = [{"iteration": 0, "mean": 0.5}, {"iteration": 50, "mean": 0.7}, {"iteration": 100, "mean": 0.8}]
    assert speedup(curve, 0.7, 100)["speedup"] == 2.0
    assert speedup(curve, 0.7, 100)["reach_iteration"] == 50
    at_init = speedup(curve, 0.4, 100)
    assert at_init["reach_iteration"] == 0 and at_init["speedup"] is None and "iteration 0" in at_init["speedup_note"]
    never = speedup(curve, 0.9, 100)
    assert never["reach_iteration"] is None and never["speedup"] is None and "does not reach" in never["speedup_note"]
    assert speedup(curve, None, 100)["speedup"] is None


def test_augment_is_siamese_and_differentiable():
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    a = augment(x, "crop_scale_flip", seed=5)
    b = augment(x.detach(), "crop_scale_flip", seed=5)
    assert torch.equal(a.detach(), b)
    assert not torch.equal(a.detach(), augment(x.detach(), "crop_scale_flip", seed=6))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert augment(x, "", seed=1) is x


def test_match_loss_zero_for_equal_gradients_and_skips_biases():
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 8)]
    assert float(match_loss(g, g)) == pytest.approx(0.0, abs=1e-5)
    flipped = [-t for t in g]
    assert float(match_loss(flipped, g)) == pytest.approx(2 * (4 + 10), rel=1e-4)


def test_observer_stays_in_its_own_run(tmp_path):
    """Each run registers its selection_done observer on a plugin manager of its own."""
    from dream_plugin.core.manager import get_plugin_manager

    before = torch.get_num_threads()
    run_ab(tiny(arms=["dream"], iterations=1, eval_points=1), out=tmp_path, log=None, write=False)
    assert "dream_plugin.harness.ab.observer" not in dict(get_plugin_manager().list_name_plugin())
    assert torch.get_num_threads() == before
