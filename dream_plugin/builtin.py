"""The internal plugin: registers the built-in strategies and dispatches requests to strategies.

The dispatcher is ``trylast`` so any third-party ``select_real_batch`` implementation may answer
first (or return None to pass).
"""

from __future__ import annotations

from typing import Any, Callable

from .hookspecs import hookimpl
from .requests import SelectionRequest, SelectionResult
from .strategies import BUILTIN_STRATEGIES

BUILTIN_PLUGIN_NAME = "dream_plugin.builtin"


@hookimpl
def register_strategies(register: Callable[..., Any]) -> None:
    for cls in BUILTIN_STRATEGIES:
        register(cls.name, cls, description=cls.description)


def _dispatch(request: SelectionRequest) -> SelectionResult | None:
    strategy = request.context.get("strategy")
    if strategy is None:
        return None
    request.context["answered_by"] = f"strategy:{request.context.get('strategy_name', '?')}"
    prepared = request.context.pop("prepared", None)  # computed ahead in a batch (Selector.select_classes)
    if prepared is not None:
        return prepared
    return strategy.select(request)


@hookimpl(trylast=True)
def select_real_batch(request: SelectionRequest) -> SelectionResult | None:
    return _dispatch(request)


@hookimpl(trylast=True)
def select_init_batch(request: SelectionRequest) -> SelectionResult | None:
    return _dispatch(request)
