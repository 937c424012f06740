"""The selector: the one object an adapter talks to.

It validates a host's call, builds a :class:`SelectionRequest`, runs the ``select_*`` hook, checks
the answer, and tells ``selection_done`` observers. It owns the strategy instances (and so their
caches) and its own seeded generator; it never touches the host's generators or network state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from typing import Any

import pluggy
import torch

from . import builtin, distributed
from .inputs import as_int, check_no_duplicates
from .config import ConfigError, PluginSettings, Settings, build_dataclass, load_settings
from .manager import (
    PluginError,
    StrategyInfo,
    build_plugin_manager,
    collect_strategies,
    get_plugin_manager,
    culprit_plugin,
)
from .requests import CALL_KINDS, EmbedFn, ImageLoader, SelectionRecord, SelectionRequest, SelectionResult


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from the parts (independent of call order and of Python's hash salt)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Selector:
    """Chooses real images per class through the plugin hooks, with the configured strategies.

    Parameters
    ----------
    settings:
        Validated settings; default: :func:`dream_plugin.config.load_settings` (YAML from
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
        self.strategies: dict[str, StrategyInfo] = collect_strategies(self.pm)
        self._instances: dict[str, Any] = {}
        self._calls: dict[tuple[str, int], int] = {}
        self.records: list[SelectionRecord] = []
        # answers computed ahead by a batched select_classes: (kind, class, call index, n) -> (result, seconds)
        self._prepared: dict[tuple[str, int, int, int], tuple[SelectionResult, float]] = {}
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

    # -- selection --------------------------------------------------------------------------------
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
        """
        request, name, call_index = self._new_request(
            class_id, n, pool, load, kind=kind, embed=embed, network=network, step=step, device=device,
            embed_source=embed_source,
        )
        # an answer computed ahead by a batched select_classes (see _prepare_many), if any
        prepared = self._prepared.pop((request.kind, request.class_id, call_index, request.n), None)
        prepared_seconds = 0.0
        if prepared is not None:
            request.context["prepared"], prepared_seconds = prepared
        hook, hook_name = self._hook_for(request.kind)
        start = time.perf_counter()

        def run_hook() -> Any:
            try:
                return hook(request=request)
            except Exception as exc:
                raise self._attribute_error(exc, hook_name, name) from exc

        answer = distributed.consistent_answer(self, request, run_hook)  # plain hook call without a process group
        seconds = time.perf_counter() - start + prepared_seconds
        answered_by = request.context.get("answered_by", "a plugin's hook implementation")
        result = answer if isinstance(answer, SelectionResult) else SelectionResult(positions=answer)
        positions = _check_positions(result.positions, request.n, request.pool_size, request.class_id, answered_by)
        self._calls[(request.kind, request.class_id)] = call_index + 1
        record = SelectionRecord(
            strategy=name, kind=request.kind, class_id=request.class_id, n=request.n, pool_size=request.pool_size,
            step=request.step, seconds=seconds, reclustered=result.reclustered,
            kmeans_iterations=result.kmeans_iterations, inertia=result.inertia,
            duplicates_resolved=result.duplicates_resolved, embed_seconds=result.embed_seconds,
            cluster_seconds=result.cluster_seconds, embed_source=embed_source, answered_by=answered_by,
        )
        self.records.append(record)
        self._notify(record)
        return positions

    def _hook_for(self, kind: str) -> tuple[Any, str]:
        """The selection hook that answers calls of ``kind``, and its name (for error messages)."""
        name = "select_init_batch" if kind == "init" else "select_real_batch"
        return getattr(self.pm.hook, name), name

    def _new_request(
        self,
        class_id: int,
        n: int,
        pool: torch.Tensor | Any,
        load: ImageLoader,
        *,
        kind: str,
        embed: EmbedFn | None,
        network: torch.nn.Module | None,
        step: int | None,
        device: torch.device | str | None,
        embed_source: str,
    ) -> tuple[SelectionRequest, str, int]:
        """Validate one call and build its request: ``(request, strategy name, call index)``.

        The call index (and so the request's generator) comes from the calls already answered for
        this (kind, class); nothing is counted until the answer is checked.
        """
        if kind not in CALL_KINDS:
            raise ValueError(f"kind: {kind!r} is not allowed; expected one of {', '.join(CALL_KINDS)}")
        pool_t = _as_pool(pool, class_id)
        n = as_int(n, "n")  # numpy integers too
        if n <= 0:
            raise ValueError(f"n must be >= 1, got n={n} for class {class_id}")
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
        dev = _check_device(device) if device is not None else _infer_device(network)
        generator = torch.Generator().manual_seed(derive_seed(self.settings.seed, kind, int(class_id), call_index))
        request = SelectionRequest(
            class_id=int(class_id), n=n, pool=pool_t, load=load, embed=embed,
            step=call_index if step is None else int(step), generator=generator, device=dev, kind=kind,
            network=network, embed_batch_size=self.settings.embed_batch_size, embed_source=embed_source,
            context={"strategy": self.strategy(name), "strategy_name": name},
        )
        return request, name, call_index

    def _prepare_many(
        self, class_ids: list[int], n: int, pool_of: dict[int, Any], load_of: dict[int, Any], **kw: Any
    ) -> None:
        """Compute the answers of several classes in one batch, for the ``select`` calls that follow.

        Only when the strategy offers ``select_many`` (DREAM: one batched k-means for every class
        that re-clusters) and no plugin other than the built-in dispatcher implements the hook,
        so the batch gives exactly the answers the per-class calls would get. The time of the
        batch is shared equally among its classes' records.
        """
        kind = kw["kind"]
        name = self.strategy_name(kind)
        if len(class_ids) < 2 or name == "host":
            return
        strategy = self.strategy(name)
        if not callable(getattr(strategy, "select_many", None)):
            return
        hook, hook_name = self._hook_for(kind)
        if any(impl.plugin_name != builtin.BUILTIN_PLUGIN_NAME for impl in hook.get_hookimpls()):
            return
        built = [self._new_request(c, n, pool_of[c], load_of[c], **kw) for c in class_ids]
        start = time.perf_counter()
        try:
            results = strategy.select_many([r for r, _, _ in built])
        except Exception as exc:
            raise self._attribute_error(exc, hook_name, name) from exc
        share = (time.perf_counter() - start) / len(built)
        for (request, _, call_index), result in zip(built, results):
            self._prepared[(request.kind, request.class_id, call_index, request.n)] = (result, share)

    def select_classes(
        self,
        class_ids: Any,
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
        ``class_ids``. Without a process group this is :meth:`select` per class. Under
        torch.distributed every rank must make the same call; ``distributed.mode`` decides whether
        the classes are sharded (class c on rank c % world_size, picks all-gathered) or computed on
        ``distributed.src`` and broadcast (see :mod:`dream_plugin.distributed`).
        """
        return distributed.select_classes(
            self, class_ids, n, pools, loads, kind=kind, embed=embed, network=network, step=step, device=device,
            embed_source=embed_source,
        )

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
        if kind not in CALL_KINDS:
            raise ValueError(f"kind: {kind!r} is not allowed; expected one of {', '.join(CALL_KINDS)}")
        call_key = (kind, int(class_id))
        call_index = self._calls.get(call_key, 0)
        self._calls[call_key] = call_index + 1
        record = SelectionRecord(
            strategy=strategy or self.strategy_name(kind), kind=kind, class_id=int(class_id), n=int(n),
            pool_size=int(pool_size), step=call_index, seconds=float(seconds), reclustered=False,
            kmeans_iterations=None, inertia=None, duplicates_resolved=0, embed_seconds=0.0,
            cluster_seconds=0.0, embed_source="none", answered_by=answered_by, note=note,
        )
        self.records.append(record)
        self._notify(record)
        return record

    def _attribute_error(self, exc: Exception, hook_name: str, strategy_name: str) -> Exception:
        culprit = culprit_plugin(self.pm, hook_name, sys.exc_info()[2])
        info = self.strategies.get(strategy_name)
        if culprit is None or culprit == builtin.BUILTIN_PLUGIN_NAME:
            if info is None or info.plugin == builtin.BUILTIN_PLUGIN_NAME:
                return exc
            culprit, what = info.plugin, f"strategy {strategy_name!r}"
        else:
            what = hook_name
        from .manager import plugin_distribution

        return PluginError(
            f"plugin {culprit!r} ({plugin_distribution(self.pm, culprit)}) raised in {what}: {type(exc).__name__}: {exc}"
        )

    def _notify(self, record: SelectionRecord) -> None:
        for impl in reversed(self.pm.hook.selection_done.get_hookimpls()):
            try:
                impl.function(record=record)
            except Exception as exc:  # noqa: BLE001 - an observer must not break the host's run
                import warnings

                warnings.warn(
                    f"selection_done observer of plugin {impl.plugin_name!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _as_pool(pool: Any, class_id: int) -> torch.Tensor:
    t = torch.as_tensor(pool)
    if t.dim() != 1:
        raise ValueError(f"the pool of class {class_id} must be 1-D (indices of its images), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"class {class_id} has no images: its pool is empty")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"the pool of class {class_id} must hold integer indices, got dtype {t.dtype}")
    t = t.to("cpu", torch.int64)
    check_no_duplicates(t, class_id)
    return t


def _check_device(device: torch.device | str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a valid torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from exc
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(
            f"device: {str(dev)!r} is not available here ({torch.cuda.device_count()} CUDA devices visible); "
            "pass the device the host's images and network live on"
        )
    return dev


def _infer_device(network: torch.nn.Module | None) -> torch.device:
    if network is not None:
        for p in network.parameters():
            return p.device
    return torch.device("cpu")


def _check_positions(positions: Any, n: int, size: int, class_id: int, who: str) -> torch.Tensor:
    if positions is None:
        raise PluginError(f"no implementation answered the selection for class {class_id} (every hook returned None)")
    t = torch.as_tensor(positions)
    if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise PluginError(f"{who} returned {t.dtype} of shape {tuple(t.shape)}; expected a 1-D integer tensor of {n} positions")
    t = t.to("cpu", torch.int64)
    if t.numel() != n:
        raise PluginError(f"{who} returned {t.numel()} positions for class {class_id}; expected exactly n={n}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= size):
        raise PluginError(f"{who} returned positions outside the pool of {size} items for class {class_id}")
    if torch.unique(t).numel() != t.numel():
        raise PluginError(f"{who} returned duplicate positions for class {class_id}; picks must be distinct")
    return t


