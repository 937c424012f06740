"""A loop method of ``dream-plugin ab`` is one module registered in one place.

A method of this test's own (one trivial step per iteration) is registered, runs through ``run_ab``
with a random and a DREAM arm, and is offered by ``--method``; it is unregistered afterwards, so
no other test sees it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dream_plugin.cli import build_parser, main
from dream_plugin.common.seeds import derive_seed
from dream_plugin.core.config import ConfigError
from dream_plugin.harness.ab import build_config, run_ab
from dream_plugin.harness.ab.cost import is_long, per_run_seconds
from dream_plugin.harness.ab.methods import (
    METHODS,
    LoopMethod,
    get_method,
    register_method,
    registered_methods,
    unregister_method,
)
from dream_plugin.harness.ab.methods.base import class_slice

NAME = "toy-mean"

TINY = {
    "method": NAME,
    "dataset": "digits",
    "arms": ["random", "dream"],
    "ipc": 2,
    "iterations": 2,
    "eval_points": 2,
    "batch_real": 12,
    "interval": 1,
    "model": {"width": 8},
    "eval": {"nets": 1, "epochs": 2},
    "device": "cpu",
    "threads": 1,
    "progress": False,
}


def toy_method(calls: list[int]) -> LoopMethod:
    """One step per iteration: pull each class's synthetic images toward the mean of one real batch."""

    def step(it: int, syn: torch.Tensor, labels: torch.Tensor, opt_img: torch.optim.Optimizer, ctx) -> float:
        calls.append(it)
        ctx.live.net = ctx.make_net(derive_seed(ctx.seed, "toy-net", it))  # the network DREAM embeds with
        loss = syn.new_zeros(())
        for c in range(ctx.num_classes):
            real = ctx.real(c, ctx.cfg.batch_real)
            loss = loss + (syn[class_slice(c, ctx.cfg.ipc)] - real.mean(dim=0)).pow(2).mean()
        opt_img.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        return float(loss.detach()) / ctx.num_classes

    return LoopMethod(name=NAME, summary="a test's one-step loop", step=step, lr_img=0.05)


@pytest.fixture
def toy():
    calls: list[int] = []
    method = register_method(toy_method(calls))
    try:
        yield method, calls
    finally:
        unregister_method(NAME)
    assert NAME not in METHODS


def test_a_registered_method_runs_through_run_ab_with_random_and_dream_arms(toy):
    method, calls = toy
    cfg = build_config(TINY)
    assert cfg.loop is method and cfg.image_lr == 0.05 and cfg.decoded_ipc == cfg.ipc
    results = run_ab(cfg, write=False, log=None)
    assert calls == [0, 1, 0, 1]  # two iterations in each arm
    assert results["config"]["method"] == NAME and results["resolved"]["lr_img"] == 0.05
    runs = {r["arm"]: r for arm in results["arms"].values() for r in arm["runs"]}
    assert set(runs) == {"random", "dream"}
    for run in runs.values():
        assert [p["iteration"] for p in run["curve"]] == [0, 2]
        assert run["loss_first"] > 0 and run["matching_network"] == []
    assert runs["dream"]["reclusterings"] > 0 and runs["random"]["reclusterings"] == 0
    # no options of its own: the defaults of the cost estimate, nothing shared but evaluations
    assert not is_long(cfg) and per_run_seconds(cfg, 1.0, 0.5, 0.0, 0.25) == 2 * 1.0 + 0.5 + 2 * 1 * 2 * 0.25


def test_a_registered_method_is_a_method_choice_and_in_the_errors(toy, capsys):
    assert NAME in METHODS and registered_methods()[-1].name == NAME
    assert build_parser().parse_args(["ab", "--method", NAME]).ab_method == NAME
    with pytest.raises(SystemExit):
        main(["ab", "--method", "nope"])
    err = capsys.readouterr().err
    assert "--method" in err and f"'{NAME}'" in err and "'dm'" in err
    with pytest.raises(ConfigError, match=rf"method \(--method\): 'nope' is not allowed; expected one of 'dm', 'dc', "
                                          rf"'idc', '{NAME}'"):
        build_config({"method": "nope"})
    with pytest.raises(ConfigError, match=rf"dc.outer_loop \(--outer-loop\): applies only to --method dc, and this "
                                          rf"run's method is {NAME}"):
        build_config({**TINY, "dc": {"outer_loop": 2}})


def test_an_unregistered_method_is_gone_everywhere(capsys):
    assert tuple(METHODS) == ("dm", "dc", "idc")
    with pytest.raises(ConfigError, match=r"method \(--method\): 'toy-mean' is not allowed; expected one of 'dm', "
                                          r"'dc', 'idc'$"):
        build_config(TINY)
    with pytest.raises(SystemExit):
        main(["ab", "--method", NAME])
    assert f"'{NAME}'" in capsys.readouterr().err


def test_registering_a_taken_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="a loop method named 'dm' is registered already"):
        register_method(get_method("dm"))
    with pytest.raises(ValueError, match="'idc'"):
        register_method(dataclasses.replace(get_method("dm"), name="idc"))
    with pytest.raises(KeyError, match="no loop method named 'nope'"):
        unregister_method("nope")
    assert tuple(METHODS) == ("dm", "dc", "idc")


def test_the_built_in_methods_say_what_the_harness_asks():
    dm, dc, idc = (get_method(n) for n in ("dm", "dc", "idc"))
    assert [m.lr_img for m in (dm, dc, idc)] == [1.0, 0.1, 0.01]
    assert (dm.section, dc.section, idc.section) == (None, "dc", "idc")
    cfg = build_config({"method": "idc", "ipc": 3, "idc": {"factor": 3}})
    assert cfg.decoded_ipc == 27 and idc.cost.steps(cfg) == cfg.idc.inner_loop
    assert cfg.iterations == 40  # idc's own default
    assert build_config({"method": "idc"}, quick=True).iterations == 4  # and its --quick size
    assert dm.network_key is None and set(idc.network_key(cfg)) == {"idc", "dsa", "dsa_strategy"}
