"""The plugin machinery end to end, without pytest (pytest itself pins a recent pluggy).

Run as ``python tests/pluggy_compat.py`` with the pluggy to check first on ``sys.path`` (see
``tests/test_pluggy_versions.py``). Exits non-zero on the first failed check; prints the pluggy
version it ran against.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings


def main() -> int:
    import pluggy
    import torch

    from dream_plugin import hookimpl
    from dream_plugin.core.config import PluginSettings, Settings
    from dream_plugin.core.manager import PluginError, build_plugin_manager, plugin_distribution
    from dream_plugin.core.requests import SelectionResult
    from dream_plugin.core.selector import Selector
    from dream_plugin.strategies import Strategy

    class FirstN(Strategy):
        name = "first-n"

        def select(self, request):
            return SelectionResult(positions=torch.arange(request.n))

    seen = []
    plugin = types.ModuleType("toy_plugin")
    plugin.register_strategies = hookimpl(lambda register: register("first-n", FirstN, description="toy"))
    plugin.selection_done = hookimpl(lambda record: seen.append(record.class_id))
    broken = types.ModuleType("broken_observer")

    def bad_observer(record):
        raise ValueError("observer bug")

    broken.selection_done = hookimpl(bad_observer)

    class EP:
        def __init__(self, name, obj):
            self.name, self.group, self.value, self._obj = name, "dream_plugin", f"{name}:plugin", obj

        def load(self):
            return self._obj

    class Dist:
        def __init__(self, name, version, eps):
            self.metadata, self.version, self.entry_points = {"name": name}, version, eps

    dists = [Dist("toy-dist", "1.2.3", [EP("toy", plugin)]), Dist("obs-dist", "0.1", [EP("obs", broken)]),
             Dist("blocked-dist", "9", [EP("blocked", None)])]
    real = importlib.metadata.distributions
    importlib.metadata.distributions = lambda: list(dists)
    try:
        pm = build_plugin_manager(PluginSettings(block=("blocked",)))
    finally:
        importlib.metadata.distributions = real
    checks = {
        "entry-point plugin loaded": pm.get_plugin("toy") is plugin,
        "blocked plugin never loaded": pm.get_plugin("blocked") is None and pm.is_blocked("blocked"),
        "distribution credited": plugin_distribution(pm, "toy") == "toy-dist 1.2.3",
    }
    sel = Selector(Settings(strategy="first-n"), plugin_manager=pm)
    checks["strategy credited to its plugin"] = (sel.strategies["first-n"].plugin, sel.strategies["first-n"].distribution) == ("toy", "toy-dist 1.2.3")
    warnings.simplefilter("ignore", RuntimeWarning)  # the broken observer's, checked just below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picks = sel.select(3, 2, torch.arange(5), lambda p: p)
    checks["strategy answers"] = picks.tolist() == [0, 1] and sel.records[-1].answered_by == "strategy:first-n"
    checks["observers isolated"] = seen == [3] and any("'obs' raised ValueError" in str(w.message) for w in caught)
    answering = types.ModuleType("answering")
    answering.select_real_batch = hookimpl(lambda request: torch.tensor([4, 0]))
    pm.register(answering, name="answering")
    checks["plugin hook answers"] = sel.select(0, 2, torch.arange(5), lambda p: p).tolist() == [4, 0] \
        and sel.records[-1].answered_by == "plugin:answering"
    raising = types.ModuleType("raising")
    raising.register_strategies = hookimpl(lambda register: 1 / 0)
    pm.register(raising, name="raising")
    try:
        Selector(Settings(), plugin_manager=pm)
        checks["raising plugin named"] = False
    except PluginError as exc:
        checks["raising plugin named"] = "plugin 'raising' (registered at run time) raised in register_strategies" in str(exc)
    failed = [name for name, ok in checks.items() if not ok]
    print(f"pluggy {pluggy.__version__}: {len(checks) - len(failed)}/{len(checks)} checks passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
