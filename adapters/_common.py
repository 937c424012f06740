"""Pieces shared by the adapters: which arm answers, and one selection through the selector."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from dream_plugin.hosts.observers import attach
from dream_plugin.core.selector import Selector

from .network import NetworkSource

HOST_SAMPLER = "host sampler"
"""The one word for the host's own sampler (its ``get_images``, its class loader, its DataLoader).

Every adapter keeps it as ``.host_sampler`` and records its answers with ``answered_by=HOST_SAMPLER``
(a ``note`` says why when it is not the A/B random arm, e.g. a whole-class fetch)."""

HOST_ARMS = ("random", "host")
"""Strategy names the host sampler answers, in every adapter that wraps one: ``random`` (the A/B
random arm *is* the host's own random draw, so it stays bit-identical to the unmodified host) and
``host`` (BN batches under ``bn_batch: host``). Only adapters that wrap no host sampler
(``ClassSampler``, ``RepresentativeBatchSampler``) answer ``random`` with ``RandomStrategy``."""


def default_selector(selector: Selector | None) -> Selector:
    """The adapter's selector (default: from $DREAM_PLUGIN_CONFIG / environment), with the shipped
    observers its settings switch on attached (records file, logging summary; see dream_plugin.hosts.observers)."""
    if selector is None:
        selector = Selector()
    elif not isinstance(selector, Selector):
        raise TypeError(f"selector must be a dream_plugin.Selector, got {type(selector).__name__}")
    attach(selector)
    return selector


def uses_host(selector: Selector, kind: str) -> bool:
    """True when the host sampler answers calls of ``kind`` (the A/B random arm, or BN batches)."""
    return selector.strategy_name(kind) in HOST_ARMS


def needs_embeddings(selector: Selector, name: str) -> bool:
    try:
        inst = selector.strategy(name)
    except Exception:  # noqa: BLE001 - the selector reports a bad strategy itself
        return False
    return bool(getattr(inst, "needs_embeddings", False))


def check_class_n(c: Any, n: Any) -> tuple[int, int]:
    """Validate a host's ``(class, n)`` call arguments (ints, numpy ints or integer scalar tensors)."""
    for name, v in (("class id", c), ("n", n)):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    return int(c), int(n)


def host_call(
    selector: Selector, kind: str, c: int, n: int, pool_size: int, fn: Callable[[], Any],
    answered_by: str = HOST_SAMPLER, note: str = "",
) -> Any:
    """Run the host sampler and record it (observers see both arms, and pass-through fetches)."""
    start = time.perf_counter()
    out = fn()
    selector.record_host_call(
        kind, c, n, time.perf_counter() - start, answered_by=answered_by, pool_size=pool_size, note=note
    )
    return out


def select_positions(
    selector: Selector,
    source: NetworkSource,
    kind: str,
    c: int,
    n: int,
    pool: torch.Tensor,
    load: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Positions into ``pool`` chosen by the configured strategy, with the right network."""
    name = selector.strategy_name(kind)
    resolved = source.resolve(kind, needs=needs_embeddings(selector, name), what=f"class {c}, strategy {name!r}: ")
    return selector.select(
        c,
        n,
        pool,
        load,
        kind=kind,
        embed=resolved.embed if resolved is not None else None,
        network=resolved.network if resolved is not None else None,
        embed_source=resolved.source if resolved is not None else "none",
    )


def as_sizes(value: Any, name: str) -> tuple[int, ...]:
    """None -> (); an int -> (int,); a sequence of ints -> tuple."""
    if value is None:
        return ()
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    if hasattr(value, "__index__"):
        sizes: tuple[int, ...] = (int(value),)
    else:
        try:
            sizes = tuple(int(v) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of ints, got {type(value).__name__}") from None
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return sizes
