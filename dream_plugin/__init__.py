"""dream-plugin: DREAM representative matching for dataset-distillation codebases.

Adapters wrap a host's own sampler; a :class:`Selector` answers through the pluggy hooks in
:mod:`dream_plugin.core.hookspecs` with the strategy chosen by config (``DREAM_STRATEGY`` flips the A/B arm).
"""

from dream_plugin.core.config import ConfigError, Settings, load_settings
from dream_plugin.core.hookspecs import hookimpl, hookspec
from dream_plugin.core.manager import PluginError, build_plugin_manager, get_plugin_manager
from dream_plugin.core.requests import SelectionRecord, SelectionRequest, SelectionResult
from dream_plugin.core.selector import Selector
from dream_plugin.strategies import Strategy

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "PluginError",
    "SelectionRecord",
    "SelectionRequest",
    "SelectionResult",
    "Selector",
    "Settings",
    "Strategy",
    "__version__",
    "build_plugin_manager",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "load_settings",
]
