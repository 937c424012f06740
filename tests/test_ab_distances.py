"""The three gradient distances of the idc loop (l1, mse, dc) and the matching-network trajectory cache."""

from __future__ import annotations

import pytest
import torch

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.distances import GRADIENT_METRICS, idc_match_loss, match_loss
from dream_plugin.harness.ab.methods.dc import match_loss as dc_loop_match_loss
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError

from test_ab_idc import TINY_IDC


def _gradients(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (8,), (8, 8, 3, 3), (8,), (10, 32), (10,)]
    return [torch.randn(s, generator=g) for s in shapes]


def test_dc_metric_is_the_dc_loops_distance_on_the_same_gradients():
    a, b = _gradients(0), _gradients(1)
    assert dc_loop_match_loss is match_loss  # one function, not a copy
    want = float(dc_loop_match_loss(a, b))
    assert float(idc_match_loss(a, b, "dc")) == want
    # by hand: per output unit 1 - cosine over tensors of 2 or more dimensions (the classifier included)
    total = 0.0
    for x, y in zip(a, b):
        if x.dim() < 2:
            continue
        xr, yr = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
        total += float((1 - (xr * yr).sum(1) / (xr.norm(dim=1) * yr.norm(dim=1) + 1e-6)).sum())
    assert want == pytest.approx(total, rel=1e-5)


def test_dc_is_scale_free_and_l1_mse_are_not():
    a = _gradients(2)
    scaled = [3 * t for t in a]
    assert float(idc_match_loss(a, scaled, "dc")) == pytest.approx(0.0, abs=1e-4)
    assert float(idc_match_loss(a, scaled, "l1")) > 1.0
    assert float(idc_match_loss(a, scaled, "mse")) > 1.0


def test_unknown_metric_is_refused_naming_it_and_the_allowed_ones():
    a = _gradients(0)
    with pytest.raises(ValueError, match=r"metric must be one of 'l1', 'mse', 'dc', got 'cos'"):
        idc_match_loss(a, a, "cos")
    with pytest.raises(ConfigError, match=r"idc\.metric.*'cos' is not allowed; expected one of .*l1.*mse.*dc"):
        build_config({**TINY_IDC, "idc": {**TINY_IDC["idc"], "metric": "cos"}})
    assert GRADIENT_METRICS == ("l1", "mse", "dc")


def test_cli_metric_dc_runs_and_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["ab", "--method", "idc", "--dataset", "digits", "--metric", "dc", "--arms", "random", "match-only",
               "--ipc", "1", "--iterations", "1", "--eval-points", "2", "--batch-real", "8", "--width", "8",
               "--idc-inner-loop", "2", "--n-data", "16", "--batch-net", "16", "--eval-nets", "1", "--eval-epochs", "2",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["config"]["idc"]["metric"] == "dc"
    for arm in ("random", "match-only"):
        loss = res["arms"][arm]["runs"][0]["loss_last"]
        # dc sums 1 - cosine over output units: between 0 and 2 per unit
        assert 0 <= loss <= 2 * (8 + 8 + 10)
    with pytest.raises(SystemExit):
        main(["ab", "--method", "idc", "--metric", "cosine"])
    assert "invalid choice: 'cosine'" in capsys.readouterr().err


# ------------------------------------------------------------------------- matching-network trajectory cache
CACHED = {**TINY_IDC, "arms": ["random", "match-only"], "iterations": 2, "eval_points": 2,
          "idc": {**TINY_IDC["idc"], "pretrain": 48, "factor": 1}, "model": {"width": 8}, "eval": {"nets": 1, "epochs": 6}}


def _fingerprint(res: dict) -> dict:
    """Everything a run measured that the matching network's trajectory can change."""
    out = {}
    for arm, a in res["arms"].items():
        for run in a["runs"]:
            out[(arm, run["seed"])] = ([p["accs"] for p in run["curve"]], run["loss_first"], run["loss_last"],
                                       [p["acc"] for p in run["matching_network"]])
    return out


def test_network_cache_gives_the_numbers_of_a_run_without_it(tmp_path):
    plain = run_ab(build_config({**CACHED, "share": False}), write=False, log=None)
    cached_cfg = {**CACHED, "cache": str(tmp_path / "cache")}
    cold = run_ab(build_config(cached_cfg), write=False, log=None)
    entries = sorted(p.name for p in (tmp_path / "cache" / "network").glob("*/*.pt"))
    # one folder per seed; each fresh network's pretraining and every inner step's update
    assert entries == ["pretrain-0.pt", "pretrain-1.pt"] + [f"update-{i}-{j}.pt" for i in range(2) for j in range(3)]
    warm = run_ab(build_config(cached_cfg), write=False, log=None)
    assert _fingerprint(plain) == _fingerprint(cold) == _fingerprint(warm)
    # a damaged entry is recomputed, not trusted
    damaged = next((tmp_path / "cache" / "network").glob("*/update-1-0.pt"))
    damaged.write_bytes(b"garbage")
    again = run_ab(build_config(cached_cfg), write=False, log=None)
    assert _fingerprint(again) == _fingerprint(plain)
    assert torch.load(damaged, weights_only=True)["net"]  # rewritten


def test_network_cache_is_per_trajectory(tmp_path):
    """Settings that change the network's training get a folder of their own; lr_img and the metric do not."""
    cache = str(tmp_path / "c")
    for changes in ({}, {"lr_img": 0.5}, {"idc": {**CACHED["idc"], "metric": "dc"}}):
        data = {**CACHED, "arms": ["random"], "iterations": 1, **changes}
        data["cache"] = cache
        run_ab(build_config(data), write=False, log=None)
    assert len(list((tmp_path / "c" / "network").iterdir())) == 1
    data = {**CACHED, "arms": ["random"], "iterations": 1, "idc": {**CACHED["idc"], "n_data": 16}, "cache": cache}
    run_ab(build_config(data), write=False, log=None)
    assert len(list((tmp_path / "c" / "network").iterdir())) == 2


def test_cache_skips_networks_with_running_statistics_and_refuses_empty_paths(tmp_path):
    data = {**CACHED, "arms": ["random", "match-only"], "iterations": 1, "model": {"width": 8, "norm": "batchnorm"}}
    plain = run_ab(build_config({**data, "share": False}), write=False, log=None)
    cached = run_ab(build_config({**data, "cache": str(tmp_path / "c")}), write=False, log=None)
    assert _fingerprint(cached) == _fingerprint(plain)
    assert not (tmp_path / "c" / "network").exists()  # BatchNorm: the trajectory depends on the arm
    assert list((tmp_path / "c" / "eval").glob("*/*.json"))
    with pytest.raises(ConfigError, match=r"cache \(--cache\): '' is not allowed"):
        build_config({**CACHED, "cache": ""})


def test_eval_cache_answers_identical_sets_only(tmp_path, monkeypatch):
    """random and match-only start from the same set: its evaluation at 0 runs once; later ones differ."""
    from dream_plugin.harness.ab import arm as arm_module

    calls = []
    real = arm_module.evaluate_synset

    def counting(x, y, *args, **kwargs):
        calls.append(args[-1])  # the iteration
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(arm_module, "evaluate_synset", counting)
    res = run_ab(build_config({**CACHED, "cache": str(tmp_path / "c")}), write=False, log=None)
    # 2 arms x 2 points, minus match-only's iteration 0 (the same set as random's)
    assert sorted(calls) == [0, 2, 2]
    assert res["arms"]["random"]["curve"][0] == res["arms"]["match-only"]["curve"][0]


def _counting_evaluations(monkeypatch) -> list[int]:
    from dream_plugin.harness.ab import arm as arm_module

    calls: list[int] = []
    real = arm_module.evaluate_synset

    def counting(x, y, *args, **kwargs):
        calls.append(args[-1])
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(arm_module, "evaluate_synset", counting)
    return calls


def test_a_run_shares_identical_work_between_its_arms_by_default(tmp_path, monkeypatch):
    """Without a cache folder the arms of one run still share (same numbers), and nothing is left behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    calls = _counting_evaluations(monkeypatch)
    alone = run_ab(build_config({**CACHED, "share": False}), write=False, log=None)
    assert sorted(calls) == [0, 0, 2, 2]
    calls.clear()
    from dream_plugin.harness.ab import arm as arm_module

    seen: list[str | None] = []
    real = arm_module._caches
    monkeypatch.setattr(arm_module, "_caches", lambda cfg, *a: seen.append(cfg.cache) or real(cfg, *a))
    shared = run_ab(build_config(CACHED), write=False, log=None)
    assert sorted(calls) == [0, 2, 2]
    assert seen and all(p.startswith(str(tmp_path / "tmp" / "dream-ab-shared-")) for p in seen)
    assert _fingerprint(shared) == _fingerprint(alone)
    assert not list((tmp_path / "tmp").glob("dream-ab-shared-*"))  # the run's temporary folder is gone
    assert shared["config"]["cache"] is None and shared["config"]["share"] is True


def test_a_written_run_shares_through_its_progress_folder_and_removes_it(tmp_path, monkeypatch):
    from dream_plugin.harness.ab import arm as arm_module

    seen: list[str | None] = []
    real = arm_module._caches

    def spying(cfg, *args):
        seen.append(cfg.cache)
        return real(cfg, *args)

    monkeypatch.setattr(arm_module, "_caches", spying)
    out = tmp_path / "out"
    run_ab(build_config({**CACHED, "arms": ["random"], "iterations": 1, "eval_points": 1}), out=out, log=None)
    assert seen and set(seen) == {str(out / "resume" / "shared")}
    assert not (out / "resume").exists()
