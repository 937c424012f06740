"""No silent options and no silent numbers in ``dream-plugin ab``: other methods' options, missing flags,
the last iteration, non-finite inputs and losses, strict JSON."""

from __future__ import annotations

import json

import pytest

from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.cli import FLAGS
from dream_plugin.harness.ab.config import AbConfig
from dream_plugin.harness.ab.output import write_json_atomic
from dream_plugin.harness.ab.validity import NonFiniteError
from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError

from test_ab_output import TINY

BASE = ["ab", "--dataset", "digits", "--arms", "random", "--ipc", "1", "--iterations", "2", "--eval-points", "2",
        "--batch-real", "4", "--width", "4", "--eval-nets", "1", "--eval-epochs", "2", "--device", "cpu",
        "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "dm", "--factor", "3"],
     "idc.factor (--factor): applies only to --method idc, and this run's method is dm; remove it, or choose "
     "--method idc"),
    (["--method", "dm", "--metric", "mse"], "idc.metric (--metric): applies only to --method idc"),
    (["--method", "idc", "--lr-net", "0.1"], "dc.lr_net (--lr-net): applies only to --method dc, and this run's "
                                             "method is idc"),
    (["--method", "idc", "--outer-loop", "3"], "dc.outer_loop (--outer-loop): applies only to --method dc"),
    (["--method", "dc", "--idc-lr-net", "0.1"], "idc.lr_net (--idc-lr-net): applies only to --method idc"),
])
def test_options_of_another_method_are_an_error_naming_the_method(argv, message, capsys):
    assert main(["ab", *argv, "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_config_file_values_of_another_method_are_refused_only_when_changed():
    defaults = AbConfig().to_dict()  # what --show-defaults writes: every section, at its defaults
    assert build_config({**defaults, "method": "idc", "dataset": "digits"}).method == "idc"
    with pytest.raises(ConfigError, match=r"^dc.inner_loop \(--inner-loop\): applies only to --method dc, and "
                                          r"this run's method is dm"):
        build_config({"dataset": "digits", "dc": {"inner_loop": 7}})
    assert build_config({"method": "dc", "dataset": "digits", "dc": {"inner_loop": 7}}).dc.inner_loop == 7


def test_every_method_knob_has_a_flag():
    keys = {key for _flag, key, _kw in FLAGS}
    for section in ("dc", "idc", "eval"):
        for field in getattr(AbConfig(), section).__dataclass_fields__:
            assert f"{section}.{field}" in keys, f"{section}.{field} has no flag"
    from dream_plugin.harness.ab.cli import flags_to_overrides
    from dream_plugin.cli import build_parser

    args = build_parser().parse_args(["ab", "--method", "idc", "--idc-lr-net", "0.05", "--idc-momentum-net", "0.5",
                                      "--idc-weight-decay-net", "0.001", "--eval-momentum", "0.8",
                                      "--eval-weight-decay", "0.0"])
    cfg = build_config(None, flags_to_overrides(args))
    assert (cfg.idc.lr_net, cfg.idc.momentum_net, cfg.idc.weight_decay_net) == (0.05, 0.5, 0.001)
    assert (cfg.eval.momentum, cfg.eval.weight_decay) == (0.8, 0.0)


def test_the_last_iteration_is_always_evaluated():
    cfg = build_config({**TINY, "iterations": 3, "eval_at": [0, 1]})
    assert cfg.eval_iterations == [0, 1, 3]
    res = run_ab(cfg, write=False, log=None)
    assert [p["iteration"] for p in res["arms"]["random"]["curve"]] == [0, 1, 3]
    assert res["arms"]["random"]["final"]["iteration"] == 3


@pytest.mark.parametrize("flag, key", [("--lr-img", "lr_img"), ("--eval-lr", "eval.lr"),
                                       ("--momentum-img", "momentum_img"), ("--idc-lr-net", "idc.lr_net")])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_inputs_are_refused(flag, key, value, capsys):
    method = ["--method", "idc"] if key.startswith("idc.") else []
    assert main(["ab", "--dataset", "digits", *method, f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert err == f"dream-plugin: error: {key} ({flag}): {float(value)!r} is not allowed; expected a finite number\n"


@pytest.mark.parametrize("flag, message", [
    ("--lr-img", "random arm, seed 0: the matching loss at iteration 1 is nan: the run diverged and every later "
                 "number would be meaningless, so it stops here; lower lr_img (--lr-img, now 1e+30) and rerun"),
    ("--eval-lr", "random arm, seed 0: the evaluation network's training loss in epoch 2 is nan: the run diverged"
                  " and every later number would be meaningless, so it stops here; lower eval.lr (--eval-lr, now "
                  "1e+30) and rerun"),
])
def test_a_diverging_run_stops_with_one_line_naming_the_option(flag, message, tmp_path, capsys):
    assert main([*BASE, flag, "1e30", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"dream-plugin: error: {message}\n"
    assert not (tmp_path / "o" / "results.json").exists()
    with pytest.raises(NonFiniteError):
        run_ab(build_config({**TINY, "lr_img": 1e30, "iterations": 2}), write=False, log=None)


def test_results_json_is_strict_json(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}}, target)

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    assert json.loads(target.read_text(), parse_constant=refuse) == {"a": None, "b": [1.0, None], "c": {"d": None}}
