"""dream-plugin: DREAM representative matching for dataset-distillation codebases.

Adapters wrap a host's own sampler; a :class:`Selector` answers through the pluggy hooks in
:mod:`dream_plugin.hookspecs` with the strategy chosen by config (``DREAM_STRATEGY`` flips the A/B arm).
"""

from .config import ConfigError, Settings, load_settings
from .hookspecs import hookimpl, hookspec
from .manager import PluginError, build_plugin_manager, get_plugin_manager
from .requests import SelectionRecord, SelectionRequest, SelectionResult
from .selector import Selector
from .strategies import Strategy

__version__ = "0.1.0"

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
