"""The selector: the one object an adapter talks to.

One path from a host's call to its answer:

1. :meth:`Selector.prepare` validates the call and builds a :class:`SelectionCall` (request,
   strategy name, call index, seed); nothing is counted yet.
2. :meth:`Selector.answer` asks the plugins first (``pm.hook.select_real_batch`` /
   ``select_init_batch``, firstresult); calls no plugin answered go to the configured strategy,
   several at once through its ``select_many`` when it has one. Every answer is checked.
3. :meth:`Selector.commit` advances the call counter, records the selection and tells the
   ``selection_done`` observers.

Under ``torch.distributed``, :mod:`dream_plugin.core.distributed` sits between 1 and 3: it decides
which rank runs step 2 and exchanges the answers. The selector owns the strategy instances (and so
their caches) and seeds every request's generator itself; it never touches the host's generators
or network state.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import pluggy
import torch

from dream_plugin.core import distributed
from dream_plugin.core.boundary import (
    PluginError,
    as_pool,
    check_class_ids,
    check_device,
    check_kind,
    check_n,
    check_positions,
    infer_device,
    per_class,
)
from dream_plugin.core.config import ConfigError, PluginSettings, Settings, build_dataclass, load_settings
from dream_plugin.core.manager import (
    BUILTIN_PLUGIN_NAME,
    StrategyInfo,
    build_plugin_manager,
    check_hook_names,
    collect_strategies,
    get_plugin_manager,
    plugin_distribution,
)
from dream_plugin.core.requests import (
    EmbedFn,
    ImageLoader,
    SelectionAnswer,
    SelectionCall,
    SelectionRecord,
    SelectionRequest,
    SelectionResult,
)
from dream_plugin.common.seeds import derive_seed
from dream_plugin.core.totals import RecentRecords, SelectionTotals

__all__ = ["Selector", "derive_seed"]

logger = logging.getLogger(__name__)


class Selector:
    """Chooses real images per class through the plugin hooks, with the configured strategies.

    Parameters
    ----------
    settings:
        Validated settings; default: :func:`dream_plugin.core.config.load_settings` (YAML from
        $DREAM_PLUGIN_CONFIG, then environment overrides such as DREAM_STRATEGY).
    plugin_manager:
        A plugin manager. Default: the process-wide one (:func:`dream_plugin.get_plugin_manager`)
        when ``settings.plugins`` is at its defaults, so an observer registered there with
        ``get_plugin_manager().register(obj)`` sees every selector's records; otherwise a new one
        honouring ``settings.plugins`` (blocked names, autoload).
    """

    def __init__(self, settings: Settings | None = None, *, plugin_manager: pluggy.PluginManager | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        if plugin_manager is not None:
            self.pm = plugin_manager
        elif self.settings.plugins == PluginSettings():
            self.pm = get_plugin_manager()
        else:
            self.pm = build_plugin_manager(self.settings.plugins)
        check_hook_names(self.pm)  # plugins registered at run time too: a misspelled hook is an error
        self.strategies: dict[str, StrategyInfo] = collect_strategies(self.pm)
        self._instances: dict[str, Any] = {}
        self._calls: dict[tuple[str, int], int] = {}
        self.records: list[SelectionRecord] = RecentRecords()
        """The latest records (at most 2 * RECENT): every record goes to the observers; totals in ``totals``."""
        self.totals = SelectionTotals()
        self.distributed_log: list[distributed.DistributedEvent] = []  # one per rank-exchanged selection
        for key, name in (("strategy", self.settings.strategy), ("init.strategy", self.settings.init_strategy)):
            self._info(name, key)
        for name in self.settings.options:
            if name not in self.strategies:
                raise ConfigError(
                    f"options.{name}: no strategy named {name!r}; known strategies: {', '.join(sorted(self.strategies))}"
                )
            self._options(name)

    # -- strategies -------------------------------------------------------------------------------
    def _info(self, name: str, key: str = "strategy") -> StrategyInfo:
        info = self.strategies.get(name)
        if info is None:
            raise ConfigError(
                f"{key}: unknown strategy {name!r}; known strategies: {', '.join(sorted(self.strategies))} "
                "(a plugin may add more; see `dream-plugin plugins`)"
            )
        return info

    def _options(self, name: str) -> Any:
        info = self._info(name)
        raw = self.settings.options.get(name, {})
        cls = info.options_class
        if cls is None or not dataclasses.is_dataclass(cls) or not dataclasses.fields(cls):
            if raw:
                raise ConfigError(f"options.{name}: strategy {name!r} takes no options, got {dict(raw)!r}")
            return cls() if cls is not None and dataclasses.is_dataclass(cls) else None
        return build_dataclass(cls, raw, prefix=f"options.{name}")

    def strategy(self, name: str) -> Any:
        """The (cached) strategy instance for ``name``."""
        if name not in self._instances:
            info = self._info(name)
            options = self._options(name)
            self._instances[name] = info.factory(options) if options is not None else info.factory()
        return self._instances[name]

    def strategy_name(self, kind: str) -> str:
        """Which strategy answers a call kind ('match', 'init' or 'bn'); 'host' means the host's own."""
        if kind == "init":
            return self.settings.init_strategy
        if kind == "bn":
            return self.settings.strategy if self.settings.bn_batch == "strategy" else "host"
        return self.settings.strategy

    def reset(self) -> None:
        """Forget cached picks and call counters (e.g. at the start of a new experiment)."""
        for inst in self._instances.values():
            if hasattr(inst, "reset"):
                inst.reset()
        self._calls.clear()

    def state_dict(self) -> dict[str, Any]:
        """The call counters and every strategy instance's :meth:`state_dict`: with the host's own random
        states, what a resumed run needs to select exactly as the uninterrupted one would."""
        return {"calls": dict(self._calls),
                "strategies": {name: inst.state_dict() for name, inst in self._instances.items()
                               if callable(getattr(inst, "state_dict", None))}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (strategies are built as needed; records are not part of it)."""
        self._calls = dict(state["calls"])
        for name, inst_state in state["strategies"].items():
            load = getattr(self.strategy(name), "load_state_dict", None)
            if callable(load):
                load(inst_state)

    # -- the host's calls -------------------------------------------------------------------------
    def select(
        self,
        class_id: int,
        n: int,
        pool: torch.Tensor | Any,
        load: ImageLoader,
        *,
        kind: str = "match",
        embed: EmbedFn | None = None,
        network: torch.nn.Module | None = None,
        step: int | None = None,
        device: torch.device | str | None = None,
        embed_source: str = "none",
    ) -> torch.Tensor:
        """Return ``n`` distinct positions into ``pool`` (a 1-D int64 CPU tensor).

        ``pool`` lists the host's indices of class ``class_id``; ``load(positions)`` returns the
        images at those pool positions; ``embed`` maps images to features with the live network.
        Under a process group one rank computes and broadcasts (see :mod:`dream_plugin.core.distributed`).
        """
        call = self.prepare(class_id, n, pool, load, kind=kind, embed=embed, network=network, step=step,
                            device=device, embed_source=embed_source)
        answers, events = distributed.consistent_answers([call], self.answer, self.settings.distributed, batch=False)
        self.distributed_log.extend(events)
        return self.commit(call, answers[0])

    def select_classes(
        self,
        class_ids: Sequence[int],
        n: int,
        pools: Any,
        loads: Any,
        *,
        kind: str = "match",
        embed: EmbedFn | None = None,
        network: torch.nn.Module | None = None,
        step: int | None = None,
        device: torch.device | str | None = None,
        embed_source: str = "none",
    ) -> dict[int, torch.Tensor]:
        """Select ``n`` positions for each class of one re-selection: ``{class_id: positions}``.

        ``pools`` / ``loads`` are mappings class -> pool / loader, or sequences aligned with
        ``class_ids``. The answers equal those of :meth:`select` per class, in ``class_ids`` order;
        the classes no plugin answers go to the strategy together (DREAM clusters them as one
        batch). Nothing is recorded unless every class was answered. Under torch.distributed every
        rank must make the same call; ``distributed.mode`` decides whether the classes are sharded
        (class c on rank c % world_size, picks all-gathered) or computed on ``distributed.src`` and
        broadcast (see :mod:`dream_plugin.core.distributed`).
        """
        ids = check_class_ids(class_ids)
        check_kind(kind)
        n = check_n(n)
        pool_of = per_class(pools, ids, "pools")
        load_of = per_class(loads, ids, "loads")
        calls = [self.prepare(c, n, pool_of[c], load_of[c], kind=kind, embed=embed, network=network, step=step,
                              device=device, embed_source=embed_source) for c in ids]
        answers, events = distributed.consistent_answers(calls, self.answer, self.settings.distributed, batch=True)
        self.distributed_log.extend(events)
        return {call.request.class_id: self.commit(call, a) for call, a in zip(calls, answers)}

    def record_host_call(
        self,
        kind: str,
        class_id: int,
        n: int,
        seconds: float,
        answered_by: str = "host sampler",
        *,
        pool_size: int = 0,
        strategy: str | None = None,
        note: str = "",
    ) -> SelectionRecord:
        """Record a draw the host's own sampler made (the A/B random arm, or a pass-through fetch) and notify observers.

        ``class_id`` -1 stands for a batch of every class; ``note`` says why the host answered.
        """
        check_kind(kind)
        call_key = (kind, int(class_id))
        call_index = self._calls.get(call_key, 0)
        self._calls[call_key] = call_index + 1
        record = SelectionRecord(
            strategy=strategy or self.strategy_name(kind), kind=kind, class_id=int(class_id), n=int(n),
            pool_size=int(pool_size), step=call_index, seconds=float(seconds), reclustered=False,
            kmeans_iterations=None, inertia=None, duplicates_resolved=0, embed_seconds=0.0,
            cluster_seconds=0.0, embed_source="none", answered_by=answered_by, note=note,
        )
        self._keep(record)
        self._notify(record)
        return record

    # -- the answering path (also the interface dream_plugin.core.distributed uses) --------------------
    def prepare(
        self,
        class_id: int,
        n: int,
        pool: torch.Tensor | Any,
        load: ImageLoader,
        *,
        kind: str = "match",
        embed: EmbedFn | None = None,
        network: torch.nn.Module | None = None,
        step: int | None = None,
        device: torch.device | str | None = None,
        embed_source: str = "none",
    ) -> SelectionCall:
        """Validate one call and build its request; nothing is counted until :meth:`commit`.

        The call index (and so the request's generator) comes from the calls already committed
        for this (kind, class).
        """
        check_kind(kind)
        pool_t = as_pool(pool, class_id)
        n = check_n(n, class_id)
        if n > pool_t.numel():
            raise ValueError(
                f"n={n} exceeds the {pool_t.numel()} images of class {class_id}; "
                f"ask for at most {pool_t.numel()} (selection is without replacement)"
            )
        if not callable(load):
            raise TypeError(f"load must be callable (positions -> images), got {type(load).__name__}")
        name = self.strategy_name(kind)
        if name == "host":
            raise ValueError("bn batches are drawn by the host itself (bn_batch: host); the adapter should not ask")
        call_index = self._calls.get((kind, int(class_id)), 0)
        dev = check_device(device) if device is not None else infer_device(network)
        seed = derive_seed(self.settings.seed, kind, int(class_id), call_index)
        request = SelectionRequest(
            class_id=int(class_id), n=n, pool=pool_t, load=load, embed=embed,
            step=call_index if step is None else int(step), generator=torch.Generator().manual_seed(seed),
            device=dev, kind=kind, network=network, embed_batch_size=self.settings.embed_batch_size,
            embed_source=embed_source,
        )
        return SelectionCall(request=request, strategy=name, call_index=call_index, seed=seed)

    def answer(self, calls: Sequence[SelectionCall]) -> list[SelectionAnswer]:
        """Checked answers to ``calls``, in order: a plugin's where one answers, else the strategy's.

        Every call is offered to the plugins first, each with its own copy of the request (its own
        generator), so a plugin that passes leaves no trace in what the strategy computes. The
        rest go to their strategy; several calls at once through its ``select_many`` when it has
        one (whose answers equal per-class ``select``), sharing the batch's time equally.
        """
        answers: list[SelectionAnswer | None] = [None] * len(calls)
        by_strategy: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            answers[i] = self._ask_plugins(call)
            if answers[i] is None:
                by_strategy.setdefault(call.strategy, []).append(i)
        for name, idx in by_strategy.items():
            for i, result, seconds in self._ask_strategy(name, [calls[i] for i in idx], idx):
                req = calls[i].request
                who = f"strategy:{name}"
                answers[i] = SelectionAnswer(result, check_positions(result.positions, req.n, req.pool_size,
                                                                     req.class_id, who), who, seconds)
        return answers  # type: ignore[return-value]

    def commit(self, call: SelectionCall, answer: SelectionAnswer) -> torch.Tensor:
        """Count the call, record it and notify the observers; returns the answer's positions."""
        request, result = call.request, answer.result
        self._calls[(request.kind, request.class_id)] = call.call_index + 1
        record = SelectionRecord(
            strategy=call.strategy, kind=request.kind, class_id=request.class_id, n=request.n,
            pool_size=request.pool_size, step=request.step, seconds=answer.seconds, reclustered=result.reclustered,
            kmeans_iterations=result.kmeans_iterations, inertia=result.inertia,
            duplicates_resolved=result.duplicates_resolved, embed_seconds=result.embed_seconds,
            cluster_seconds=result.cluster_seconds, embed_source=request.embed_source,
            answered_by=answer.answered_by,
        )
        self._keep(record)
        logger.debug("%s picks of class %d (call %d, n=%d of %d) answered by %s in %.4f s", request.kind,
                     request.class_id, call.call_index, request.n, request.pool_size, answer.answered_by, answer.seconds)
        self._notify(record)
        return answer.positions

    def _keep(self, record: SelectionRecord) -> None:
        """Count the record and keep it among the recent ones (memory stays flat over a long run)."""
        self.totals.add(record)
        self.records.append(record)

    # -- helpers of the answering path ------------------------------------------------------------
    def _hook_name(self, kind: str) -> str:
        return "select_init_batch" if kind == "init" else "select_real_batch"

    def _implementers(self, hook_name: str) -> list[str]:
        """Plugins implementing a selection hook, in pluggy's call order."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return [impl.plugin_name for impl in reversed(impls)]

    def _ask_plugins(self, call: SelectionCall) -> SelectionAnswer | None:
        """The plugins' answer to ``call`` through ``pm.hook`` (firstresult), or None when none answers."""
        hook_name = self._hook_name(call.request.kind)
        names = self._implementers(hook_name)
        if not names:
            return None
        request = _plugin_copy(call.request, call.seed)
        start = time.perf_counter()
        try:
            answer = getattr(self.pm.hook, hook_name)(request=request)
        except Exception as exc:
            raise PluginError(f"{self._plugins_label(names)} raised in {hook_name}: {type(exc).__name__}: {exc}") from exc
        if answer is None:
            return None
        seconds = time.perf_counter() - start
        # pluggy does not say which implementation of a firstresult hook answered: with one
        # implementer that is exact, with several the record names them all
        who = f"plugin:{names[0]}" if len(names) == 1 else f"plugin hook {hook_name} (one of {', '.join(names)})"
        result = answer if isinstance(answer, SelectionResult) else SelectionResult(positions=answer)
        req = call.request
        return SelectionAnswer(result, check_positions(result.positions, req.n, req.pool_size, req.class_id, who),
                               who, seconds)

    def _plugins_label(self, names: list[str]) -> str:
        labels = [f"{n!r} ({plugin_distribution(self.pm, n)})" for n in names]
        return f"plugin {labels[0]}" if len(labels) == 1 else f"one of the plugins {', '.join(labels)}"

    def _ask_strategy(self, name: str, calls: list[SelectionCall], idx: list[int]) -> list[tuple[int, SelectionResult, float]]:
        """``(index, result, seconds)`` per call from strategy ``name`` (batched when it can)."""
        strategy = self.strategy(name)
        many = getattr(strategy, "select_many", None)
        out = []
        try:
            if len(calls) > 1 and callable(many):
                start = time.perf_counter()
                results = list(many([c.request for c in calls]))
                if len(results) != len(calls):
                    raise PluginError(f"strategy {name!r} answered {len(results)} of {len(calls)} requests in select_many")
                share = (time.perf_counter() - start) / len(calls)
                out = [(i, r, share) for i, r in zip(idx, results)]
            else:
                for i, c in zip(idx, calls):
                    start = time.perf_counter()
                    result = strategy.select(c.request)
                    out.append((i, result, time.perf_counter() - start))
        except PluginError:
            raise
        except Exception as exc:
            info = self.strategies.get(name)
            if info is None or info.plugin == BUILTIN_PLUGIN_NAME:
                raise
            raise PluginError(
                f"plugin {info.plugin!r} ({info.distribution}) raised in strategy {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return [(i, r if isinstance(r, SelectionResult) else SelectionResult(positions=r), s) for i, r, s in out]

    def _notify(self, record: SelectionRecord) -> None:
        """Tell the ``selection_done`` observers, each through the hook with every wrapper around it.

        An observer that raises must neither break the host's run nor keep the others from the
        record, and the warning must name it; one call of the whole hook cannot do that, so each
        observer is called through pluggy's public ``subset_hook_caller`` holding it and every
        ``wrapper=True`` / ``hookwrapper=True`` implementation: a wrapper wraps each observer's call.
        """
        hook = self.pm.hook.selection_done
        impls = hook.get_hookimpls()
        if not impls:
            return
        observers = [impl for impl in impls if not _is_wrapper(impl)]
        if not observers:  # only wrappers: they still see the record, once
            self._call_observers("selection_done", [], record, "a selection_done wrapper")
            return
        for impl in reversed(observers):
            others = [o.plugin for o in observers if o.plugin is not impl.plugin]
            self._call_observers("selection_done", others, record, f"selection_done observer of plugin {impl.plugin_name!r}")

    def _call_observers(self, hook_name: str, excluded: list[Any], record: SelectionRecord, who: str) -> None:
        try:
            self.pm.subset_hook_caller(hook_name, excluded)(record=record)
        except Exception as exc:  # noqa: BLE001 - an observer must not break the host's run
            warnings.warn(f"{who} raised {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=4)


def _is_wrapper(impl: Any) -> bool:
    """True for a ``wrapper=True`` or old-style ``hookwrapper=True`` implementation."""
    return bool(getattr(impl, "wrapper", False) or getattr(impl, "hookwrapper", False))


def _plugin_copy(request: SelectionRequest, seed: int) -> SelectionRequest:
    """The plugins' own copy of ``request``: nothing they draw, write or change reaches the strategy.

    A fresh generator from the call's seed, its own pool tensor and a deep copy of ``context``;
    the host's loader, embedder and network are shared (they are the host's, not the request's).
    """
    return dataclasses.replace(
        request, generator=torch.Generator().manual_seed(seed), pool=request.pool.clone(),
        context=copy.deepcopy(request.context),
    )
