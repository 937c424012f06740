"""The plugin manager: hook specs, the built-in plugin and third-party entry points.

Only public pluggy and :mod:`importlib.metadata` API is used: entry points are read with
``importlib.metadata`` and the distribution of each loaded plugin is kept by
:class:`DreamPluginManager` itself. This module holds the project's only global state: a lazily
built default plugin manager.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pluggy

from dream_plugin.core import builtin, hookspecs
from dream_plugin.core.builtin import BUILTIN_PLUGIN_NAME
from dream_plugin.core.boundary import PluginError
from dream_plugin.core.config import ENV_DISABLE_AUTOLOAD, PluginSettings

ENTRY_POINT_GROUP = "dream_plugin"
PROJECT_SPEC_ATTR = hookspecs.PROJECT_NAME + "_spec"

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_PLUGIN_NAME", "DreamPluginManager", "ENTRY_POINT_GROUP", "PluginError", "StrategyInfo",
    "autoload_disabled", "build_plugin_manager", "check_hook_names", "collect_strategies", "get_plugin_manager",
    "load_entry_points", "plugin_distribution", "reset_plugin_manager",
]


class DreamPluginManager(pluggy.PluginManager):
    """A pluggy plugin manager that remembers which distribution each entry-point plugin came from.

    ``distributions`` maps a plugin name to ``"name version"`` of its distribution.
    """

    def __init__(self, project_name: str = hookspecs.PROJECT_NAME) -> None:
        super().__init__(project_name)
        self.distributions: dict[str, str] = {}


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy and where it came from."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    distribution: str

    @property
    def options_class(self) -> type | None:
        return getattr(self.factory, "Options", None)


def autoload_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when DREAM_PLUGIN_DISABLE_AUTOLOAD asks to skip entry points."""
    env = os.environ if environ is None else environ
    return env.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() in ("1", "true", "yes")


def _distribution_label(dist: importlib.metadata.Distribution | None) -> str:
    if dist is None:
        return "built-in"
    name = dist.metadata["name"] if dist.metadata else None
    return f"{name or '?'} {dist.version}"


def load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every plugin of the ``dream_plugin`` entry-point group that is not blocked.

    Unlike a bare ``load_setuptools_entrypoints``, a plugin that fails to import is reported
    with its entry-point name and distribution.
    """
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) from distribution {_distribution_label(dist)} "
                    f"failed to import: {type(exc).__name__}: {exc}; to run without it, add {ep.name!r} to "
                    f"plugins.block in the config, or set {ENV_DISABLE_AUTOLOAD}=1 to load no third-party plugin"
                ) from exc
            pm.register(plugin, name=ep.name)
            logger.debug("loaded plugin %r (%s) from %s", ep.name, ep.value, _distribution_label(dist))
            if isinstance(pm, DreamPluginManager):
                pm.distributions[ep.name] = _distribution_label(dist)


def build_plugin_manager(
    settings: PluginSettings | None = None, *, environ: Mapping[str, str] | None = None
) -> pluggy.PluginManager:
    """A fresh plugin manager: specs, the built-in plugin, then (unless disabled) entry points.

    Blocked names are set before entry points load, so a blocked plugin is never imported.
    """
    settings = settings or PluginSettings()
    pm = DreamPluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name=BUILTIN_PLUGIN_NAME)
    for name in settings.block:
        if name == BUILTIN_PLUGIN_NAME:
            raise PluginError(f"plugins.block: {name!r} is the built-in plugin and cannot be blocked")
        pm.set_blocked(name)
    if settings.autoload and not autoload_disabled(environ):
        load_entry_points(pm)
    check_hook_names(pm)
    return pm


def check_hook_names(pm: pluggy.PluginManager) -> None:
    """Reject a hook implementation that matches no hook specification (a misspelled hook name).

    pluggy's ``check_pending`` finds them; without it such an implementation is silently never
    called. The error names the plugin, the unknown hook and the hooks that exist.
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = sorted(n for n in dir(hookspecs) if getattr(getattr(hookspecs, n), PROJECT_SPEC_ATTR, None))
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(
            f"plugin {name!r} ({plugin_distribution(pm, name)}): {exc}; "
            f"the hooks of {hookspecs.PROJECT_NAME!r} are {', '.join(known)}"
        ) from exc


_default_pm: pluggy.PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide default plugin manager (built on first use from the environment)."""
    global _default_pm
    with _default_lock:
        if _default_pm is None:
            _default_pm = build_plugin_manager()
        return _default_pm


def reset_plugin_manager() -> None:
    """Forget the default plugin manager (tests, or after installing a plugin at run time)."""
    global _default_pm
    with _default_lock:
        _default_pm = None


def plugin_distribution(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """``"name version"`` of the distribution that provided a plugin, ``built-in``, or ``registered at run time``."""
    if plugin_name == BUILTIN_PLUGIN_NAME:
        return "built-in"
    known = getattr(pm, "distributions", None)
    if isinstance(known, dict) and plugin_name in known:
        return known[plugin_name]
    plugin = pm.get_plugin(plugin_name)
    for p, dist in pm.list_plugin_distinfo():  # plugins loaded by pluggy's own load_setuptools_entrypoints
        if p is plugin:
            return f"{dist.project_name} {dist.version}"
    return "registered at run time"


def collect_strategies(pm: pluggy.PluginManager) -> dict[str, StrategyInfo]:
    """Ask every plugin's ``register_strategies`` for its strategies, remembering their source.

    The hook is called one plugin at a time through pluggy's public ``subset_hook_caller`` (the
    same call path as ``pm.hook``): each strategy must be credited to the plugin that registered
    it, and a plugin that raises must be named, which one call of the whole hook cannot tell.
    Registration order: built-in first.
    """
    found: dict[str, StrategyInfo] = {}
    impls = pm.hook.register_strategies.get_hookimpls()
    plugins = [impl.plugin for impl in impls]
    for impl in impls:
        dist = plugin_distribution(pm, impl.plugin_name)
        register = _registrar(found, impl.plugin_name, dist)
        caller = pm.subset_hook_caller("register_strategies", [p for p in plugins if p is not impl.plugin])
        try:
            caller(register=register)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"plugin {impl.plugin_name!r} ({dist}) raised in register_strategies: {type(exc).__name__}: {exc}"
            ) from exc
    return found


def _registrar(found: dict[str, StrategyInfo], plugin: str, dist: str) -> Callable[..., None]:
    """The ``register`` callable handed to one plugin's ``register_strategies``."""

    def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"plugin {plugin!r} ({dist}) registered a strategy with an invalid name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} ({dist}) registered strategy {name!r} with a non-callable factory {factory!r}")
        if name in found:
            other = found[name]
            raise PluginError(
                f"strategy {name!r} is registered twice: by {other.plugin!r} ({other.distribution}) "
                f"and by {plugin!r} ({dist}); block one of them with plugins.block"
            )
        found[name] = StrategyInfo(name, factory, description or (factory.__doc__ or "").strip().split("\n")[0], plugin, dist)

    return register
