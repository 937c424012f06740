"""Plugin discovery and registration, with fake distributions as pluggy's own tests do."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
import torch

from dream_plugin import hookimpl
from dream_plugin.core.config import PluginSettings, Settings
from dream_plugin.core.manager import (
    PluginError,
    build_plugin_manager,
    collect_strategies,
    get_plugin_manager,
    reset_plugin_manager,
)
from dream_plugin.core.selector import Selector
from dream_plugin.strategies import Strategy
from dream_plugin.core.requests import SelectionResult


class FirstN(Strategy):
    """Takes the first n pool positions (a deterministic toy strategy)."""

    name = "first-n"

    def select(self, request):
        return SelectionResult(positions=torch.arange(request.n))


def make_plugin_module(name: str, strategies=(FirstN,)):
    mod = types.ModuleType(name)

    @hookimpl
    def register_strategies(register):
        for cls in strategies:
            register(cls.name, cls, description="toy")

    mod.register_strategies = register_strategies
    return mod


class FakeEntryPoint:
    def __init__(self, name, loader, group="dream_plugin"):
        self.name, self._loader, self.group, self.value = name, loader, group, f"fake_{name}:plugin"

    def load(self):
        return self._loader()


class FakeDist:
    def __init__(self, name, version, entry_points):
        self.metadata = {"name": name}
        self.version = version
        self.entry_points = entry_points

    @property
    def _normalized_name(self):
        return self.metadata["name"]


@pytest.fixture
def fake_dists(monkeypatch):
    dists: list[FakeDist] = []
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: list(dists))
    return dists


def test_builtin_strategies_are_registered_with_their_source(isolated_pm):
    found = collect_strategies(isolated_pm)
    assert set(found) == {"random", "dream", "herding", "kcenter", "precomputed"}
    assert {s.plugin for s in found.values()} == {"dream_plugin.builtin"}
    assert {s.distribution for s in found.values()} == {"built-in"}


def test_entry_point_plugin_is_loaded_and_credited_to_its_distribution(fake_dists):
    fake_dists.append(FakeDist("dream-firstn", "1.2.3", [FakeEntryPoint("firstn", lambda: make_plugin_module("m1"))]))
    pm = build_plugin_manager()
    found = collect_strategies(pm)
    assert found["first-n"].plugin == "firstn"
    assert found["first-n"].distribution == "dream-firstn 1.2.3"


def test_entry_points_of_other_groups_are_ignored(fake_dists):
    fake_dists.append(FakeDist("other", "1.0", [FakeEntryPoint("x", lambda: 1 / 0, group="pytest11")]))
    pm = build_plugin_manager()
    assert "first-n" not in collect_strategies(pm)


def test_autoload_off_by_env_skips_entry_points_before_import(fake_dists, monkeypatch):
    loaded = []
    fake_dists.append(FakeDist("d", "1", [FakeEntryPoint("firstn", lambda: loaded.append(1) or make_plugin_module("m"))]))
    monkeypatch.setenv("DREAM_PLUGIN_DISABLE_AUTOLOAD", "1")
    pm = build_plugin_manager()
    assert "first-n" not in collect_strategies(pm)
    assert loaded == []


def test_autoload_off_by_settings(fake_dists):
    fake_dists.append(FakeDist("d", "1", [FakeEntryPoint("firstn", lambda: make_plugin_module("m"))]))
    assert "first-n" not in collect_strategies(build_plugin_manager(PluginSettings(autoload=False)))


def test_blocked_plugin_is_never_imported(fake_dists):
    loaded = []
    fake_dists.append(FakeDist("d", "1", [FakeEntryPoint("firstn", lambda: loaded.append(1) or make_plugin_module("m"))]))
    pm = build_plugin_manager(PluginSettings(block=("firstn",)))
    assert "first-n" not in collect_strategies(pm)
    assert loaded == []


def test_blocking_the_builtin_plugin_is_refused():
    with pytest.raises(PluginError, match="is the built-in plugin and cannot be blocked"):
        build_plugin_manager(PluginSettings(block=("dream_plugin.builtin",)))


def test_plugin_that_fails_to_import_is_named_with_its_distribution(fake_dists):
    def broken():
        raise ModuleNotFoundError("No module named 'missing_dep'")

    fake_dists.append(FakeDist("dream-broken", "0.1", [FakeEntryPoint("broken", broken)]))
    with pytest.raises(PluginError, match=r"plugin 'broken' \(fake_broken:plugin\) from distribution dream-broken 0.1 failed to import: ModuleNotFoundError"):
        build_plugin_manager()


def test_register_strategies_that_raises_is_named(isolated_pm):
    mod = types.ModuleType("bad")

    @hookimpl
    def register_strategies(register):
        raise KeyError("oops")

    mod.register_strategies = register_strategies
    isolated_pm.register(mod, name="badplugin")
    with pytest.raises(PluginError, match=r"plugin 'badplugin' \(registered at run time\) raised in register_strategies: KeyError"):
        collect_strategies(isolated_pm)


def test_duplicate_strategy_names_are_an_error_naming_both(isolated_pm):
    class Clash(FirstN):
        name = "dream"

    isolated_pm.register(make_plugin_module("clash", strategies=(Clash,)), name="clash")
    with pytest.raises(PluginError, match=r"strategy 'dream' is registered twice: by 'dream_plugin.builtin' \(built-in\) and by 'clash'"):
        collect_strategies(isolated_pm)


def test_non_callable_factory_is_refused(isolated_pm):
    mod = types.ModuleType("nc")

    @hookimpl
    def register_strategies(register):
        register("thing", 42)

    mod.register_strategies = register_strategies
    isolated_pm.register(mod, name="nc")
    with pytest.raises(PluginError, match="non-callable factory 42"):
        collect_strategies(isolated_pm)


def test_third_party_strategy_is_selectable_by_env(fake_dists, monkeypatch):
    fake_dists.append(FakeDist("dream-firstn", "1.2.3", [FakeEntryPoint("firstn", lambda: make_plugin_module("m2"))]))
    monkeypatch.setenv("DREAM_STRATEGY", "first-n")
    sel = Selector()
    pos = sel.select(0, 3, torch.arange(10, 20), lambda p: torch.zeros(len(p), 1, 2, 2))
    assert pos.tolist() == [0, 1, 2]
    assert sel.records[-1].strategy == "first-n"


def test_default_plugin_manager_is_cached_and_resettable():
    a = get_plugin_manager()
    assert get_plugin_manager() is a
    reset_plugin_manager()
    assert get_plugin_manager() is not a


def test_unknown_strategy_lists_known_ones(isolated_pm):
    with pytest.raises(Exception, match=r"strategy: unknown strategy 'dreem'; known strategies: dream, herding, kcenter, precomputed, random"):
        Selector(Settings(strategy="dreem"), plugin_manager=isolated_pm)


def _load_misspelled_plugin():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "plugins" / "misspelled_hook.py"
    spec = importlib.util.spec_from_file_location("misspelled_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_misspelled_hook_implementation_is_rejected_at_load(fake_dists):
    plugin = _load_misspelled_plugin()
    fake_dists.append(FakeDist("typo-dist", "0.3", [FakeEntryPoint("typo", lambda: plugin)]))
    with pytest.raises(PluginError, match=r"plugin 'typo' \(typo-dist 0.3\): unknown hook 'selection_don'.*"
                                          r"hooks of 'dream_plugin' are register_strategies, select_init_batch, "
                                          r"select_real_batch, selection_done"):
        build_plugin_manager()


def test_a_misspelled_hook_registered_at_run_time_is_rejected_by_the_selector(isolated_pm):
    isolated_pm.register(_load_misspelled_plugin(), name="typo")
    with pytest.raises(PluginError, match=r"plugin 'typo' \(registered at run time\): unknown hook 'selection_don'"):
        Selector(Settings(strategy="random"), plugin_manager=isolated_pm)
