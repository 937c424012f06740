"""The paper-setting presets (``--preset``, ``--presets``) and the cost estimate (``--dry-run``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import yaml

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.cost import CostEstimate, is_long, per_run_seconds
from dream_plugin.harness.ab.presets import PRESETS
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError

# the smallest run of a preset's wiring: one outer iteration of one inner step, one tiny evaluation
TINY_STEP = {
    "iterations": 1, "eval_at": [0, 1], "ipc": 1, "batch_real": 4, "subsample": 2, "seeds": 1, "jobs": 1,
    "model": {"width": 8}, "idc": {"inner_loop": 1, "n_data": 8, "batch_net": 8, "pretrain": 8},
    "eval": {"nets": 1, "epochs": 1, "batch": 8}, "device": "cpu", "threads": 1, "progress": False,
}


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """An ImageFolder of 10 classes x 12 random RGB 32x32 images (the CIFAR-10 presets' shape)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fake-cifar")
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = root / f"class{c}"
        folder.mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_presets_are_listed_one_line_each(capsys):
    assert main(["ab", "--presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in ("dream-cifar10-ipc10", "dream-cifar10-ipc10-short", "dream-mnist-ipc10"):
        assert sum(line.startswith(name + " ") for line in out) == 1


def test_show_defaults_prints_the_resolved_preset(capsys):
    assert main(["ab", "--show-defaults", "--preset", "dream-cifar10-ipc10"]) == 0
    text = capsys.readouterr().out
    assert "resolved config of preset dream-cifar10-ipc10" in text
    cfg = yaml.safe_load(text)
    assert cfg["model"] == {"width": 128, "depth": 3, "norm": "instancenorm"}
    assert cfg["idc"]["inner_loop"] == 100 and cfg["idc"]["n_data"] == 2000 and cfg["idc"]["factor"] == 2
    assert cfg["batch_real"] == 128 and cfg["idc"]["metric"] == "mse" and cfg["interval"] == 10
    assert cfg["eval_at"] == list(range(0, 1001, 40)) and cfg["eval"]["epochs"] == 1000
    assert cfg["arms"] == ["random", "dream", "dream+", "init-only", "match-only"]
    # IDC's 5e-3 on [0, 1] pixels is 5e-3 / std**2 on normalised ones
    assert cfg["lr_img"] == pytest.approx(5e-3 / np.mean([0.2470, 0.2435, 0.2616]) ** 2, rel=1e-4)


def test_flags_override_a_preset_and_unknown_presets_are_refused():
    cfg = build_config(None, {"model": {"width": 8}, "root": "x"}, preset="dream-cifar10-ipc10-short")
    assert cfg.model.width == 8 and cfg.iterations == 200 and cfg.eval_iterations == [0, 40, 80, 120, 160, 200]
    with pytest.raises(ConfigError, match=r"preset \(--preset\): 'dream-cifar' is not allowed; expected one of "
                                          r"dream-cifar10-ipc10, "):
        build_config(None, None, preset="dream-cifar")
    with pytest.raises(ConfigError, match=r"root \(--root\)"):
        build_config(None, None, preset="dream-cifar10-ipc10")  # CIFAR-10 is read from the user's disk


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_one_tiny_step_on_data_of_its_shape(name, fake_cifar):
    flags = dict(TINY_STEP)
    if "cifar10" in name:
        flags.update(dataset="folder", root=str(fake_cifar))  # 3 x 32 x 32, 10 classes
    else:
        flags.update(dataset="mnist")  # the embedded MNIST subset: the MNIST preset's 1 x 28 x 28
    cfg = build_config(None, flags, preset=name)
    preset = PRESETS[name].data
    assert cfg.method == "idc" and cfg.idc.factor == 2 and cfg.idc.metric == preset["idc"]["metric"]
    assert cfg.dsa and cfg.lr_img == preset["lr_img"] and cfg.interval == 10
    res = run_ab(cfg, write=False, log=None)
    assert set(res["arms"]) == set(preset["arms"])
    for arm in res["arms"].values():
        run = arm["runs"][0]
        assert [p["iteration"] for p in run["curve"]] == [0, 1]
        assert math.isfinite(run["loss_last"]) and all(0 <= a <= 1 for p in run["curve"] for a in p["accs"])


def test_dry_run_estimates_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(["ab", "--method", "idc", "--dataset", "digits", "--arms", "random", "dream", "--seeds", "2",
               "--iterations", "3", "--idc-inner-loop", "4", "--width", "8", "--eval-epochs", "5", "--eval-nets", "2",
               "--n-data", "16", "--batch-net", "16", "--pretrain", "32", "--batch-real", "8", "--ipc", "1",
               "--dry-run", "--no-progress", "--out", str(out)])
    assert rc == 0 and not out.exists()
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("estimated cost")][0]
    assert "CPU-hours per arm and seed" in line and "for 4 runs with 1 job(s)" in line


def test_cost_arithmetic_by_hand():
    cfg = build_config({"method": "idc", "dataset": "digits", "iterations": 10, "eval_at": [0, 5, 10],
                        "idc": {"inner_loop": 4, "fix_iter": 2, "pretrain": 300, "batch_net": 100},
                        "eval": {"nets": 2, "epochs": 7}})
    # 10 x (4 x 1.0 + 0.5) + 5 fresh networks x 3 steps x 0.1 + 3 points x 2 nets x 7 epochs x 0.2
    assert per_run_seconds(cfg, 1.0, 0.5, 0.1, 0.2) == pytest.approx(45 + 1.5 + 8.4)
    est = CostEstimate("cuda:0", 1.0, 0.1, 0.2, per_run_seconds=7200.0, runs=6, jobs=2)
    assert est.total_seconds == 21600.0
    assert "about 2 GPU-hours per arm and seed, 6 hours for 6 runs with 2 job(s)" in est.text()
    dm = build_config({"method": "dm", "iterations": 5, "eval_points": 2, "eval": {"nets": 1, "epochs": 3}})
    assert per_run_seconds(dm, 2.0, 1.0, 0.0, 0.5) == pytest.approx(5 * 2 + 1 + 2 * 3 * 0.5)
    assert is_long(build_config(None, {"root": "x"}, preset="dream-cifar10-ipc10"))
    assert not is_long(dataclasses.replace(dm))
