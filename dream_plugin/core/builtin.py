"""The internal plugin: registers the built-in strategies, as any third-party plugin would.

It implements no selection hook: when no plugin answers ``select_real_batch`` /
``select_init_batch``, the selector itself asks the configured strategy (see
:mod:`dream_plugin.core.selector`).
"""

from __future__ import annotations

from typing import Any, Callable

from dream_plugin.core.hookspecs import hookimpl
from dream_plugin.strategies import BUILTIN_STRATEGIES

BUILTIN_PLUGIN_NAME = "dream_plugin.builtin"


@hookimpl
def register_strategies(register: Callable[..., Any]) -> None:
    for cls in BUILTIN_STRATEGIES:
        register(cls.name, cls, description=cls.description)
