"""The ``stratified`` strategy (DREAM's clusters as strata, picks in proportion to their size) and
arms built from any registered strategy (``S``, ``match:S``, ``init:S``), a plugin's included."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
import torch

from dream_plugin.ab.config import build_config
from dream_plugin.ab.names import arm_file_name, arm_strategies
from dream_plugin.ab.paired import matching_pairs
from dream_plugin.config import ConfigError, Settings, parse_settings
from dream_plugin.diagnose.config import DiagnoseConfig
from dream_plugin.hookspecs import hookimpl
from dream_plugin.selector import Selector
from dream_plugin.strategies import RandomStrategy, StratifiedStrategy, proportional_draw


def _labels(*sizes: int) -> torch.Tensor:
    return torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)])


def test_every_item_has_probability_n_over_N_and_clusters_get_proportional_counts():
    labels = _labels(50, 30, 15, 5)  # N = 100
    n, draws = 10, 20_000
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(100)
    for _ in range(draws):
        picks = proportional_draw(labels, n, g)
        assert torch.unique(picks).numel() == n
        counts = torch.bincount(labels[picks], minlength=4)
        # n x share = 5, 3, 1.5, 0.5: floor or ceil of it, never more, never less
        assert counts[0] == 5 and counts[1] == 3 and counts[2] in (1, 2) and counts[3] in (0, 1)
        hits[picks] += 1
    freq = hits / draws
    # binomial sd of one item's frequency: sqrt(0.1 * 0.9 / 20000) = 0.0021; 0.012 is over 5 sd
    assert (freq - n / 100).abs().max() < 0.012
    # the small clusters are not over-weighted: a cluster of 5 gets 5% of the picks, not a quarter
    assert abs(float(freq[95:].sum()) / n - 0.05) < 0.005


def test_draw_is_reproducible_and_refuses_bad_sizes():
    labels = _labels(7, 3)
    a = proportional_draw(labels, 4, torch.Generator().manual_seed(3))
    b = proportional_draw(labels, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert proportional_draw(labels, 10, torch.Generator().manual_seed(3)).sort().values.tolist() == list(range(10))
    for bad in (0, 11):
        with pytest.raises(ValueError, match=rf"n: {bad} is not allowed; expected 1 <= n <= 10"):
            proportional_draw(labels, bad)


def _select(sel, images, n, net):
    return sel.select(0, n, torch.arange(images.shape[0]), lambda p: images[p], network=net, embed=net.embed)


def test_picks_follow_the_cluster_sizes_and_are_fresh_each_call(make_selector, tiny_pool, tiny_net):
    # three separated groups, of 40, 10 and 10 images: n = 6 gives 4, 1 and 1 picks
    images = torch.cat([tiny_pool[:20], tiny_pool[:20] + 0.01, tiny_pool[20:30], tiny_pool[40:50]])
    sel = make_selector(strategy="stratified", options={"stratified": {"interval": 3}})
    calls = [_select(sel, images, 6, tiny_net) for _ in range(4)]
    group = torch.tensor([0] * 40 + [1] * 10 + [2] * 10)
    for picks in calls:
        assert torch.bincount(group[picks], minlength=3).tolist() == [4, 1, 1]
    assert len({tuple(sorted(p.tolist())) for p in calls}) > 1  # a new draw on every call, unlike DREAM
    assert [r.reclustered for r in sel.records] == [True, False, False, True]
    assert all(r.strategy == "stratified" for r in sel.records)


def test_dream_picks_the_same_items_for_interval_calls_where_stratified_draws_anew(make_selector, tiny_pool, tiny_net):
    dream = make_selector(strategy="dream", options={"dream": {"interval": 4}})
    picks = [_select(dream, tiny_pool, 6, tiny_net) for _ in range(4)]
    assert all(torch.equal(picks[0], p) for p in picks)


def test_a_resumed_selector_continues_the_strata(make_selector, tiny_pool, tiny_net):
    def make():
        return make_selector(strategy="stratified", seed=4, options={"stratified": {"interval": 5}})

    sel = make()
    _select(sel, tiny_pool, 6, tiny_net)
    resumed = make()
    resumed.load_state_dict(sel.state_dict())
    assert torch.equal(_select(resumed, tiny_pool, 6, tiny_net), _select(sel, tiny_pool, 6, tiny_net))
    assert [r.reclustered for r in resumed.records] == [False]  # the strata came with the state


def test_subsample_is_refused_with_the_reason(isolated_pm):
    settings = parse_settings({"strategy": "stratified", "options": {"stratified": {"subsample": 2}}})
    with pytest.raises(ConfigError, match=r"subsample: 2 is not allowed for 'stratified'; expected 1"):
        Selector(settings, plugin_manager=isolated_pm)


# -- arms from registered strategies -----------------------------------------------------------------
def test_arm_forms():
    assert arm_strategies("match-only") == ("dream", "random")
    assert arm_strategies("match:stratified") == ("stratified", "random")
    assert arm_strategies("init:stratified") == ("random", "stratified")
    assert arm_strategies("stratified") == ("stratified", "stratified")
    for bad in ("match:", "other:dream", "match:a:b", ""):
        assert arm_strategies(bad) is None
    assert arm_file_name("match:stratified") == "match-stratified"


def test_strategy_arms_validate_and_pair_with_the_arms_they_differ_from():
    cfg = build_config({"method": "dm", "arms": ["random", "match-only", "match:stratified"]})
    settings = cfg.arm_settings("match:stratified", 0)
    assert (settings.strategy, settings.init.strategy) == ("stratified", "random")
    assert matching_pairs(list(cfg.arms)) == [
        ("match-only", "random"), ("match:stratified", "random"), ("match:stratified", "match-only")]


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
        from dream_plugin.requests import SelectionResult

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
