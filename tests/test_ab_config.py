"""Configuration, flags and error messages of ``dream-plugin ab``."""

from __future__ import annotations

import pytest
import yaml

from dream_plugin.harness.ab import AbConfig, build_config, defaults_yaml
from dream_plugin.harness.ab.config import QUICK
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError


def error_of(capsys, *argv: str) -> str:
    assert main(["ab", *argv]) == 2
    return capsys.readouterr().err


def test_show_defaults_round_trips(capsys):
    assert main(["ab", "--show-defaults"]) == 0
    text = capsys.readouterr().out
    assert text == defaults_yaml()
    assert build_config(yaml.safe_load(text)) == AbConfig()
    assert "method: dm" in text and "arms:" in text


def test_precedence_defaults_file_quick_flags(tmp_path):
    f = tmp_path / "ab.yaml"
    f.write_text("iterations: 77\nipc: 3\neval:\n  nets: 5\nselector:\n  options:\n    dream:\n      subsample: 1\n")
    from dream_plugin.harness.ab.cli import flags_to_overrides
    from dream_plugin.cli import build_parser

    args = build_parser().parse_args(["ab", "--config", str(f), "--quick", "--ipc", "4", "--eval-nets", "1",
                                      "--no-dsa", "--arms", "random", "dream"])
    flags = flags_to_overrides(args)
    assert flags == {"ipc": 4, "eval": {"nets": 1}, "dsa": False, "arms": ["random", "dream"]}
    cfg = build_config(yaml.safe_load(f.read_text()), flags, quick=True)
    assert cfg.ipc == 4  # flag beats file
    assert cfg.iterations == QUICK["iterations"]  # quick beats file
    assert cfg.eval.nets == 1 and cfg.eval.epochs == QUICK["eval"]["epochs"]
    assert cfg.arms == ("random", "dream")
    s = cfg.arm_settings("dream", 3)
    assert s.strategy == "dream" and s.init_strategy == "dream" and s.seed == 3
    assert s.options["dream"] == {"interval": cfg.interval, "subsample": 1}
    assert cfg.arm_settings("init-only", 0).strategy == "random"
    assert cfg.arm_settings("init-only", 0).init_strategy == "dream"
    assert cfg.arm_settings("match-only", 0).init_strategy == "random"


def test_eval_iterations():
    assert build_config({"iterations": 100, "eval_points": 5}).eval_iterations == [0, 25, 50, 75, 100]
    assert build_config({"iterations": 10, "eval_points": 1}).eval_iterations == [10]
    assert build_config({"iterations": 10, "eval_at": [10, 0, 5]}).eval_iterations == [0, 5, 10]
    assert build_config({"iterations": 3, "eval_points": 9}).eval_iterations == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--arms", "random", "magic"], ["arms (--arms)", "'magic'", "init-only", "kcenter"]),
        (["--arms", "random", "random"], ["arms (--arms)", "more than once"]),
        (["--ipc", "0"], ["ipc (--ipc)", "0", ">= 1"]),
        (["--iterations", "0"], ["iterations (--iterations)", ">= 1"]),
        (["--iterations", "10", "--eval-at", "0", "11"], ["eval_at (--eval-at)", "11", "between 0 and iterations=10"]),
        (["--eval-at", "-1"], ["eval_at (--eval-at)", "-1"]),
        (["--dataset", "folder"], ["root (--root)", "'folder'", "--root"]),
        (["--dataset", "torchvision:CIFAR10"], ["root (--root)", "torchvision:CIFAR10"]),
        (["--dataset", "imagenet"], ["dataset (--dataset)", "'imagenet'", "mnist", "digits"]),
        (["--dsa-strategy", "crop_rotate"], ["dsa_strategy (--dsa-strategy)", "'rotate'", "crop, scale, flip"]),
        (["--device", "tpu"], ["device (--device)", "'tpu'", "cpu"]),
        (["--seeds", "0"], ["seeds (--seeds)", ">= 1"]),
        (["--eval-nets", "0"], ["eval.nets (--eval-nets)"]),
        (["--batch-real", "0"], ["batch_real (--batch-real)"]),
        (["--interval", "0"], ["interval (--interval)"]),
        (["--lr-img", "-1"], ["lr_img (--lr-img)", "> 0"]),
    ],
)
def test_bad_flags_give_clear_errors(capsys, argv, needles):
    err = error_of(capsys, *argv)
    assert err.startswith("dream-plugin: error: ")
    for needle in needles:
        assert needle in err, (needle, err)


def test_unknown_method_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["ab", "--method", "mtt"])
    err = capsys.readouterr().err
    assert "--method" in err and "'mtt'" in err and "dm" in err and "dc" in err


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"method": "mtt"}, ["method", "'mtt'", "'dm'", "'dc'"]),
        ({"itrations": 5}, ["'itrations'", "allowed keys", "iterations"]),
        ({"eval": {"epoch": 5}}, ["'eval.epoch'", "epochs"]),
        ({"model": {"norm": "layer"}}, ["model.norm", "'layer'", "instancenorm"]),
        ({"ipc": "ten"}, ["ipc", "'ten'", "an integer"]),
        ({"arms": []}, ["arms (--arms)", "at least one arm"]),
        ({"selector": {"strategy": "dream"}}, ["selector.strategy", "set by each arm"]),
        ({"selector": {"options": {"dream": {"interval": 0}}}}, ["interval", "0", ">= 1"]),
        ({"selector": {"options": {"nope": {}}}}, ["options.nope", "no strategy named 'nope'"]),
    ],
)
def test_bad_config_values(data, needles):
    with pytest.raises(ConfigError) as info:
        cfg = build_config(data)
        from dream_plugin.core.selector import Selector

        for arm in cfg.arms:  # unknown per-strategy option sections surface when a selector is built
            Selector(cfg.arm_settings(arm, 0))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_bad_config_file_names_the_file(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("ipc: [1,\n")
    err = error_of(capsys, "--config", str(f))
    assert "bad.yaml" in err and "not valid YAML" in err
    err = error_of(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in err and "does not exist" in err


def test_sizes_are_checked_against_the_data(capsys, tmp_path):
    err = error_of(capsys, "--dataset", "digits", "--ipc", "500", "--no-progress", "--out", str(tmp_path))
    assert "ipc (--ipc): 500 exceeds" in err and "choose at most" in err
    err = error_of(capsys, "--dataset", "digits", "--batch-real", "999", "--no-progress", "--out", str(tmp_path))
    assert "batch_real (--batch-real): 999 exceeds" in err


def test_missing_folder_is_a_clear_error(capsys, tmp_path):
    err = error_of(capsys, "--dataset", "folder", "--root", str(tmp_path / "nowhere"), "--no-progress")
    assert "dataset (--dataset) 'folder'" in err and "does not exist" in err


def test_threads_flag_zero_means_torch_default():
    from dream_plugin.harness.ab.cli import flags_to_overrides
    from dream_plugin.cli import build_parser

    assert flags_to_overrides(build_parser().parse_args(["ab", "--threads", "0"])) == {"threads": None}
    assert build_config({"threads": None}).threads is None
    assert AbConfig().threads == 1
