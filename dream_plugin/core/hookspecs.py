"""Hook specifications of the ``dream_plugin`` pluggy project.

Plugins implement these with ``@dream_plugin.hookimpl``. A hook implementation whose name matches
no specification here (a misspelling) is rejected when the plugins are loaded and when a selector
is built (:func:`dream_plugin.core.manager.check_hook_names`). Built-in strategies are registered by a
plugin too (see :mod:`dream_plugin.core.builtin`), so a third-party package has exactly the same powers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import torch

    from dream_plugin.core.requests import SelectionRecord, SelectionRequest, SelectionResult

PROJECT_NAME = "dream_plugin"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_strategies(register: Callable[..., Any]) -> None:
    """Add named selection strategies.

    Call ``register(name, factory, description=...)`` once per strategy, where ``factory`` is a
    :class:`dream_plugin.strategies.Strategy` subclass (or any callable taking the validated options
    and returning an object with ``select(request)``). Names must be unique across all plugins.
    """


@hookspec(firstresult=True)
def select_real_batch(request: SelectionRequest) -> torch.Tensor | SelectionResult | None:
    """Choose ``request.n`` real items of one class to match against.

    Return a 1-D int64 tensor of distinct positions in ``request.pool`` (or a
    :class:`~dream_plugin.core.requests.SelectionResult` carrying them with diagnostics), or None to let
    the next implementation answer. When no plugin answers, the selector asks the configured
    strategy itself. The request is the plugin's own copy (its own generator, pool tensor and
    ``context``): what it draws, writes or changes there never reaches the strategy.
    """


@hookspec(firstresult=True)
def select_init_batch(request: SelectionRequest) -> torch.Tensor | SelectionResult | None:
    """Choose the real items that initialise one class of the synthetic set.

    Same contract as :func:`select_real_batch`; ``request.n`` is ipc, or ipc*factor**2 for
    multi-formation.
    """


@hookspec
def selection_done(record: SelectionRecord) -> None:
    """Observe a finished selection (strategy, class, n, time, k-means iterations, inertia...).

    Called once per selection after the picks are validated. Observers must not raise; one that
    does is reported with its plugin name and the others still see the record. To keep that,
    each observer is called on its own through the hook, with every ``wrapper=True`` (or
    ``hookwrapper=True``) implementation around it: a wrapper wraps each observer's call, so it
    runs once per observer and record (once per record when there is no other observer).
    """
