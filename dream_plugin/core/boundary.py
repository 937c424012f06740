"""Validation of what crosses the selector's boundary: a host's call and an answer to it.

Every check raises a clear error naming the bad value and what is allowed, before anything is
counted or recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dream_plugin.common.inputs import as_int, check_no_duplicates
from dream_plugin.core.requests import CALL_KINDS


class PluginError(RuntimeError):
    """A plugin failed to import, to register, or raised while answering a hook."""


def check_kind(kind: str) -> str:
    if kind not in CALL_KINDS:
        raise ValueError(f"kind: {kind!r} is not allowed; expected one of {', '.join(CALL_KINDS)}")
    return kind


def check_n(n: Any, class_id: int | None = None) -> int:
    n = as_int(n, "n")  # numpy integers and one-element integer tensors are ints too
    if n <= 0:
        raise ValueError(f"n must be >= 1, got n={n}" + (f" for class {class_id}" if class_id is not None else ""))
    return n


def as_pool(pool: Any, class_id: int) -> torch.Tensor:
    """A class pool as a 1-D int64 CPU tensor of host indices."""
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


def check_device(
    device: torch.device | str, what: str = "device", *, advice: str = "pass the device the host's images and network live on"
) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; the one device check of every boundary.

    ``what`` names the value in the message (``'device'``, ``'--device'``); ``advice`` ends the
    message when the device is well-formed but absent.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}: {device!r} is not a torch device; expected cpu, cuda or cuda:<index>") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: {str(device)!r} was asked for but CUDA is not available here; {advice}")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"{what}: {str(device)!r} does not exist here ({torch.cuda.device_count()} CUDA devices visible); {advice}"
        )
    return dev


def infer_device(network: torch.nn.Module | None) -> torch.device:
    if network is not None:
        for p in network.parameters():
            return p.device
    return torch.device("cpu")


def check_positions(positions: Any, n: int, size: int, class_id: int, who: str) -> torch.Tensor:
    """An answer's positions as a 1-D int64 CPU tensor: exactly ``n`` distinct positions in the pool."""
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


def check_class_ids(class_ids: Any) -> list[int]:
    """The classes of one re-selection: a non-empty sequence of distinct ints >= 0."""
    if isinstance(class_ids, (str, bytes)) or not isinstance(class_ids, Sequence):
        raise TypeError(f"class_ids must be a sequence of ints, got {type(class_ids).__name__}")
    ids: list[int] = []
    for c in class_ids:
        if isinstance(c, bool) or not isinstance(c, int) and not (isinstance(c, torch.Tensor) and c.dim() == 0):
            raise TypeError(f"class_ids must hold ints, got {type(c).__name__} {c!r}")
        if int(c) < 0:
            raise ValueError(f"class_ids must be >= 0, got {int(c)}")
        ids.append(int(c))
    if not ids:
        raise ValueError("class_ids is empty; give at least one class")
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"class_ids must be distinct; repeated: {dup[:10]}")
    return ids


def per_class(values: Any, class_ids: list[int], what: str) -> dict[int, Any]:
    """``{class: value}`` from a mapping class -> value or a sequence aligned with ``class_ids``."""
    if isinstance(values, Mapping):
        missing = [c for c in class_ids if c not in values]
        if missing:
            raise ValueError(f"{what}: no entry for class(es) {missing[:10]}; give one per class in class_ids")
        return {c: values[c] for c in class_ids}
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a mapping class -> value or a sequence aligned with class_ids, got {type(values).__name__}")
    if len(values) != len(class_ids):
        raise ValueError(f"{what}: {len(values)} entries for {len(class_ids)} classes; give one per class in class_ids")
    return dict(zip(class_ids, values))
