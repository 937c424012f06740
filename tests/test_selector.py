"""The selector: request validation, hook dispatch, answer checks, observers, the A/B switch."""

from __future__ import annotations

import types

import pytest
import torch

from dream_plugin import hookimpl
from dream_plugin.core.config import ConfigError, PluginSettings, Settings
from dream_plugin.core.manager import PluginError, build_plugin_manager
from dream_plugin.core.selector import Selector, derive_seed


def loader_for(images):
    return lambda pos: images[pos]


def test_random_picks_are_distinct_and_seeded(make_selector):
    pool = torch.arange(100, 160)
    a = make_selector(strategy="random", seed=3).select(0, 10, pool, loader_for(torch.zeros(60, 1, 2, 2)))
    b = make_selector(strategy="random", seed=3).select(0, 10, pool, loader_for(torch.zeros(60, 1, 2, 2)))
    c = make_selector(strategy="random", seed=4).select(0, 10, pool, loader_for(torch.zeros(60, 1, 2, 2)))
    assert a.dtype == torch.int64 and a.numel() == 10 and torch.unique(a).numel() == 10
    assert int(a.min()) >= 0 and int(a.max()) < 60
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_per_call_seeds_do_not_depend_on_other_classes(make_selector):
    pool = torch.arange(50)
    load = loader_for(torch.zeros(50, 1, 2, 2))
    s1 = make_selector(strategy="random")
    first = s1.select(1, 5, pool, load)
    s2 = make_selector(strategy="random")
    s2.select(0, 5, pool, load)
    s2.select(2, 5, pool, load)
    assert torch.equal(s2.select(1, 5, pool, load), first)


def test_derive_seed_is_stable():
    assert derive_seed(0, "match", 1, 2) == derive_seed(0, "match", 1, 2)
    assert derive_seed(0, "match", 1, 2) != derive_seed(0, "match", 1, 3)
    assert 0 <= derive_seed("x") < 2**63


@pytest.mark.parametrize(
    ("n", "pool", "error", "message"),
    [
        (0, torch.arange(5), ValueError, r"n must be >= 1, got n=0 for class 2"),
        (-3, torch.arange(5), ValueError, r"n must be >= 1, got n=-3"),
        (6, torch.arange(5), ValueError, r"n=6 exceeds the 5 images of class 2; ask for at most 5"),
        (2.0, torch.arange(5), TypeError, r"n must be an int, got float 2.0"),
        (1, torch.arange(0), ValueError, r"class 2 has no images: its pool is empty"),
        (1, torch.zeros(2, 2, dtype=torch.long), ValueError, r"must be 1-D .* got shape \(2, 2\)"),
        (1, torch.tensor([0.0, 1.0]), TypeError, r"must hold integer indices, got dtype torch.float32"),
    ],
)
def test_bad_requests_are_refused_with_clear_messages(make_selector, n, pool, error, message):
    sel = make_selector(strategy="random")
    with pytest.raises(error, match=message):
        sel.select(2, n, pool, lambda p: torch.zeros(len(p), 1))
    assert sel.records == []


def test_unknown_call_kind(make_selector):
    with pytest.raises(ValueError, match=r"kind: 'warmup' is not allowed; expected one of match, init, bn"):
        make_selector(strategy="random").select(0, 1, torch.arange(3), lambda p: p, kind="warmup")


def test_bn_batches_belong_to_the_host_by_default(make_selector):
    sel = make_selector(strategy="dream")
    assert sel.strategy_name("bn") == "host"
    assert make_selector(strategy="dream", bn_batch="strategy").strategy_name("bn") == "dream"
    with pytest.raises(ValueError, match="bn batches are drawn by the host itself"):
        sel.select(0, 1, torch.arange(3), lambda p: p, kind="bn")


def test_init_strategy_follows_strategy_unless_set(make_selector):
    from dream_plugin.core.config import InitSettings

    assert make_selector(strategy="random").strategy_name("init") == "random"
    assert make_selector(strategy="random", init=InitSettings(strategy="dream")).strategy_name("init") == "dream"


def test_env_switch_flips_the_arm_without_code_changes(monkeypatch, isolated_pm, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("strategy: dream\n")
    monkeypatch.setenv("DREAM_PLUGIN_CONFIG", str(cfg))
    assert Selector(plugin_manager=isolated_pm).strategy_name("match") == "dream"
    monkeypatch.setenv("DREAM_STRATEGY", "random")
    assert Selector(plugin_manager=isolated_pm).strategy_name("match") == "random"


def test_strategy_options_are_validated_at_construction(isolated_pm):
    with pytest.raises(ConfigError, match=r"unknown key 'options\.dream\.intervall'; allowed keys under 'options\.dream'"):
        Selector(Settings(options={"dream": {"intervall": 3}}), plugin_manager=isolated_pm)
    with pytest.raises(ConfigError, match=r"options\.dream\.interval: 0 is not allowed; expected an integer >= 1"):
        Selector(Settings(options={"dream": {"interval": 0}}), plugin_manager=isolated_pm)
    with pytest.raises(ConfigError, match=r"options\.dream\.kmeans\.backend: 'cuml' is not allowed; expected one of 'torch'"):
        Selector(Settings(options={"dream": {"kmeans": {"backend": "cuml"}}}), plugin_manager=isolated_pm)
    with pytest.raises(ConfigError, match=r"options\.random: strategy 'random' takes no options"):
        Selector(Settings(options={"random": {"x": 1}}), plugin_manager=isolated_pm)
    with pytest.raises(ConfigError, match=r"options\.nope: no strategy named 'nope'"):
        Selector(Settings(options={"nope": {}}), plugin_manager=isolated_pm)


def _plugin(name, **hooks):
    mod = types.ModuleType(name)
    for key, fn in hooks.items():
        setattr(mod, key, hookimpl(fn))
    return mod


def test_a_plugin_hook_answers_before_the_strategy(isolated_pm):
    def select_real_batch(request):
        return torch.arange(request.n - 1, -1, -1)

    isolated_pm.register(_plugin("rev", select_real_batch=select_real_batch), name="rev")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    assert sel.select(0, 3, torch.arange(10), lambda p: p).tolist() == [2, 1, 0]
    assert sel.records[-1].answered_by == "plugin:rev"


def test_a_plugin_returning_none_passes_to_the_strategy(isolated_pm):
    isolated_pm.register(_plugin("pass", select_real_batch=lambda request: None), name="pass")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    sel.select(0, 3, torch.arange(10), lambda p: p)
    assert sel.records[-1].answered_by == "strategy:random"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (torch.tensor([0, 0, 1]), "returned duplicate positions"),
        (torch.tensor([0, 1]), "returned 2 positions for class 0; expected exactly n=3"),
        (torch.tensor([0, 1, 10]), "outside the pool of 10 items"),
        (torch.tensor([0.0, 1.0, 2.0]), "expected a 1-D integer tensor"),
    ],
)
def test_bad_answers_from_plugins_are_refused(isolated_pm, answer, message):
    isolated_pm.register(_plugin("bad", select_real_batch=lambda request: answer), name="bad")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    with pytest.raises(PluginError, match=message):
        sel.select(0, 3, torch.arange(10), lambda p: p)
    assert sel.records == []


def test_a_plugin_that_raises_is_named(isolated_pm):
    def select_real_batch(request):
        raise RuntimeError("boom")

    isolated_pm.register(_plugin("explodes", select_real_batch=select_real_batch), name="explodes")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    with pytest.raises(PluginError, match=r"plugin 'explodes' \(registered at run time\) raised in select_real_batch: RuntimeError: boom"):
        sel.select(0, 3, torch.arange(10), lambda p: p)


def test_observers_receive_a_record_and_cannot_break_the_run(isolated_pm):
    seen = []
    isolated_pm.register(_plugin("obs", selection_done=lambda record: seen.append(record)), name="obs")

    def selection_done(record):
        raise ValueError("observer bug")

    isolated_pm.register(_plugin("badobs", selection_done=selection_done), name="badobs")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    with pytest.warns(RuntimeWarning, match="observer of plugin 'badobs' raised ValueError"):
        sel.select(4, 2, torch.arange(10), lambda p: p)
    assert len(seen) == 1
    r = seen[0]
    assert (r.strategy, r.kind, r.class_id, r.n, r.pool_size, r.step) == ("random", "match", 4, 2, 10, 0)
    assert r.seconds >= 0 and r.as_dict()["strategy"] == "random"


def test_default_selectors_share_the_process_wide_plugin_manager(monkeypatch):
    from dream_plugin import get_plugin_manager

    monkeypatch.setattr("importlib.metadata.distributions", lambda: [])
    seen = []
    get_plugin_manager().register(_plugin("watch", selection_done=lambda record: seen.append(record.class_id)), name="watch")
    sel = Selector(Settings(strategy="random"))
    assert sel.pm is get_plugin_manager()
    sel.select(7, 1, torch.arange(3), lambda p: p)
    assert seen == [7]
    # a selector with its own plugin settings gets its own manager (blocked names must not leak)
    from dream_plugin.core.config import PluginSettings

    own = Selector(Settings(strategy="random", plugins=PluginSettings(block=("x",))))
    assert own.pm is not get_plugin_manager()


def test_two_answering_plugins_are_both_named(isolated_pm):
    isolated_pm.register(_plugin("a", select_real_batch=lambda request: torch.arange(request.n)), name="a")
    isolated_pm.register(_plugin("b", select_real_batch=lambda request: None), name="b")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    assert sel.select(0, 2, torch.arange(10), lambda p: p).tolist() == [0, 1]
    assert sel.records[-1].answered_by == "plugin hook select_real_batch (one of b, a)"  # pluggy's call order


def test_the_builtin_plugin_implements_no_selection_hook(isolated_pm):
    for hook in ("select_real_batch", "select_init_batch"):
        assert getattr(isolated_pm.hook, hook).get_hookimpls() == []
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    sel.select(0, 3, torch.arange(10), lambda p: p)
    assert sel.records[-1].answered_by == "strategy:random"


def test_the_request_carries_no_side_channel(isolated_pm):
    seen = []

    def select_real_batch(request):
        seen.append(dict(request.context))
        return None

    isolated_pm.register(_plugin("look", select_real_batch=select_real_batch), name="look")
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    sel.select(0, 3, torch.arange(10), lambda p: p)
    assert seen == [{}]


def test_a_passing_plugin_that_draws_from_the_generator_does_not_change_the_picks(isolated_pm):
    def select_real_batch(request):
        torch.rand(100, generator=request.generator)  # consumes the request's random numbers, then passes
        request.context["strategy"] = "tampered"
        return None

    plain = Selector(Settings(strategy="random"), plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))
    isolated_pm.register(_plugin("draws", select_real_batch=select_real_batch), name="draws")
    with_plugin = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    for c in range(3):
        a = plain.select(c, 4, torch.arange(30), lambda p: p)
        b = with_plugin.select(c, 4, torch.arange(30), lambda p: p)
        assert torch.equal(a, b)
    assert [r.answered_by for r in with_plugin.records] == ["strategy:random"] * 3


def test_selections_are_logged_on_the_module_logger_under_the_package_logger(isolated_pm, caplog):
    sel = Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
    with caplog.at_level("DEBUG", logger="dream_plugin"):  # the package logger still sees them
        sel.select(2, 3, torch.arange(10), lambda p: p)
    assert [r.name for r in caplog.records] == ["dream_plugin.core.selector"]
    assert "match picks of class 2 (call 0, n=3 of 10) answered by strategy:random" in caplog.text


def test_what_a_plugin_writes_into_its_request_never_reaches_the_strategy(isolated_pm):
    from dream_plugin.core.requests import SelectionResult
    from dream_plugin.strategies import Strategy

    seen = []

    class Looks(Strategy):
        name = "looks"

        def select(self, request):
            seen.append((dict(request.context), request.pool.tolist(), request.n, torch.rand(1, generator=request.generator).item()))
            return SelectionResult(positions=torch.arange(request.n))

    def register_strategies(register):
        register("looks", Looks, description="records what it is given")

    def meddles(request):
        request.context["written"] = True
        request.pool.mul_(0)  # in place: the plugin's own pool tensor
        request.n = 1
        torch.rand(5, generator=request.generator)
        return None

    isolated_pm.register(_plugin("strategy", register_strategies=register_strategies), name="strategy")
    clean = Selector(Settings(strategy="looks"), plugin_manager=isolated_pm)
    clean.select(2, 3, torch.arange(10, 20), lambda p: p)
    isolated_pm.register(_plugin("meddles", select_real_batch=meddles), name="meddles")
    sel = Selector(Settings(strategy="looks"), plugin_manager=isolated_pm)
    picks = sel.select(2, 3, torch.arange(10, 20), lambda p: p)
    assert seen[1] == seen[0] == ({}, list(range(10, 20)), 3, seen[0][3])
    assert picks.tolist() == [0, 1, 2]


def _wrapped_calls(isolated_pm, observers):
    events = []

    def wrapping(record):
        events.append(("before", record.class_id))
        result = yield
        events.append(("after", record.class_id))
        return result

    wrapper = types.ModuleType("wrapping")
    wrapper.selection_done = hookimpl(wrapper=True)(wrapping)
    isolated_pm.register(wrapper, name="wrapping")
    for name in observers:
        isolated_pm.register(_plugin(name, selection_done=lambda record, name=name: events.append((name, record.class_id))), name=name)
    Selector(Settings(strategy="random"), plugin_manager=isolated_pm).select(5, 2, torch.arange(10), lambda p: p)
    return events


def test_a_selection_done_wrapper_wraps_each_observer_call(isolated_pm):
    events = _wrapped_calls(isolated_pm, ["one", "two"])
    assert events == [("before", 5), ("two", 5), ("after", 5), ("before", 5), ("one", 5), ("after", 5)]


def test_a_selection_done_wrapper_alone_sees_each_record_once(isolated_pm):
    assert _wrapped_calls(isolated_pm, []) == [("before", 5), ("after", 5)]
