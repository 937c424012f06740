"""Checks on input values shared by the selector, the adapters and the embedding helper: integers
(numpy integers accepted alike), class pools and networks.

Each check raises an error that names the argument, the bad value and what is allowed, so that
the modules calling them stay one line per check and their messages stay alike.
"""

from __future__ import annotations

import operator
from typing import Any

import torch


def is_integer(value: Any) -> bool:
    """True for ``int``, numpy integers and one-element integer tensors; False for ``bool``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_floating_point() or value.numel() != 1):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a plain ``int`` (numpy integers accepted); ``TypeError``/``ValueError`` naming ``name``."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    out = operator.index(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {out}")
    return out


def check_pool_not_empty(pool: torch.Tensor, class_id: int, where: str) -> None:
    """An empty pool means the class has no images: say so, before any dtype complaint."""
    if pool.numel() == 0:
        raise ValueError(f"class {class_id} has no images: {where} is empty")


def check_no_duplicates(pool: torch.Tensor, class_id: int) -> None:
    """A pool must list each image once: duplicates would let one image be picked twice."""
    unique, counts = torch.unique(pool, return_counts=True)
    if unique.numel() != pool.numel():
        dup = unique[counts > 1]
        shown = ", ".join(str(int(v)) for v in dup[:10]) + (", ..." if dup.numel() > 10 else "")
        raise ValueError(
            f"the pool of class {class_id} lists {dup.numel()} index(es) more than once: {shown}; "
            "each image must appear once (de-duplicate the host's indices for this class)"
        )


def check_not_meta(network: torch.nn.Module | None, what: str = "the network") -> None:
    """A network on the meta device has no weights to compute with: refuse it by name."""
    if network is None:
        return
    for t in network.parameters():
        if t.is_meta:
            break
    else:
        for t in network.buffers():
            if t.is_meta:
                break
        else:
            return
    raise ValueError(
        f"{what} ({type(network).__name__}) has parameters on the meta device (shapes only, no values); "
        "materialise it first, e.g. net.to_empty(device=...) then load_state_dict(...), or build it on cpu/cuda"
    )
