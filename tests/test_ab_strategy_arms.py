"""A/B arms built from any registered strategy (``S``, ``match:S``, ``init:S``), a plugin's included,
and diagnose strategies likewise."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
import torch

from dream_plugin.harness.ab.config import build_config
from dream_plugin.harness.ab.names import arm_file_name, arm_strategies
from dream_plugin.harness.ab.paired import matching_pairs
from dream_plugin.core.config import ConfigError, Settings
from dream_plugin.harness.diagnose.config import DiagnoseConfig
from dream_plugin.core.hookspecs import hookimpl
from dream_plugin.core.selector import Selector
from dream_plugin.strategies import RandomStrategy


# -- arms from registered strategies -----------------------------------------------------------------
def test_arm_forms():
    assert arm_strategies("match-only") == ("dream", "random")
    assert arm_strategies("match:kcenter") == ("kcenter", "random")
    assert arm_strategies("init:kcenter") == ("random", "kcenter")
    assert arm_strategies("kcenter") == ("kcenter", "kcenter")
    for bad in ("match:", "other:dream", "match:a:b", ""):
        assert arm_strategies(bad) is None
    assert arm_file_name("match:kcenter") == "match-kcenter"


def test_strategy_arms_validate_and_pair_with_the_arms_they_differ_from():
    cfg = build_config({"method": "dm", "arms": ["random", "match-only", "match:kcenter"]})
    settings = cfg.arm_settings("match:kcenter", 0)
    assert (settings.strategy, settings.init.strategy) == ("kcenter", "random")
    assert matching_pairs(list(cfg.arms)) == [
        ("match-only", "random"), ("match:kcenter", "random"), ("match:kcenter", "match-only")]


@pytest.mark.parametrize("arm, message", [
    ("match:nope", r"'match:nope' is not allowed; expected an arm whose strategies are registered; 'nope' is not"),
    ("sideways:dream", r"'sideways:dream' is not allowed; expected a named arm, or any registered strategy"),
])
def test_bad_strategy_arms_name_what_is_allowed(arm, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"method": "dm", "arms": ["random", arm]})


class _FirstN(RandomStrategy):
    name = "first-n"
    description = "the first n items of the pool"

    def select(self, request):
        from dream_plugin.core.requests import SelectionResult

        return SelectionResult(positions=torch.arange(request.n))


class _Dist:
    def __init__(self, entry_point):
        self.metadata = {"name": "dream-firstn"}
        self.version = "1.0"
        self.entry_points = [entry_point]
        self._normalized_name = "dream-firstn"


class _EntryPoint:
    name, group, value = "firstn", "dream_plugin", "dream_firstn:plugin"

    def load(self):
        mod = types.ModuleType("dream_firstn")

        @hookimpl
        def register_strategies(register):
            register(_FirstN.name, _FirstN, description=_FirstN.description)

        mod.register_strategies = register_strategies
        return mod


def test_a_plugins_strategy_is_an_ab_arm_and_a_diagnose_strategy(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [_Dist(_EntryPoint())])
    cfg = build_config({"method": "dm", "arms": ["random", "match:first-n", "first-n"]})
    settings = cfg.arm_settings("match:first-n", 0)
    assert (settings.strategy, settings.init.strategy) == ("first-n", "random")
    assert ("match:first-n", "random") in matching_pairs(list(cfg.arms))
    sel = Selector(Settings(strategy="first-n"))
    assert sel.select(0, 3, torch.arange(10, 20), lambda p: torch.zeros(len(p), 1, 2, 2)).tolist() == [0, 1, 2]
    DiagnoseConfig(strategies=("random", "first-n")).validate()
    with pytest.raises(ConfigError, match=r"strategies \(--strategies\): 'nope' is not allowed; expected any "
                                          r"registered strategy: .*first-n"):
        DiagnoseConfig(strategies=("nope",)).validate()
