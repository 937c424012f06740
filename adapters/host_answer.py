"""The same answer to a host bug in every arm of a ``get_images`` adapter.

The random arm is the host's own sampler, unchanged: whatever it accepts, the other arms accept too,
and whatever makes its answer unusable is refused in every arm with one message that names the
host sampler (and noted in the records).

* ``n`` above the class pool: the hosts' ``np.random.permutation(indices_class[c])[:n]`` returns the
  whole pool; the other arms then return the whole pool too, with a warning and a record note.
* a class id out of range, negative included (``indices_class[-1]`` would silently read the last
  class): refused in every arm before anything is drawn.
* a host answer that is not a tensor of ``min(n, pool)`` images: refused naming the call.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


class HostSamplerError(ValueError):
    """The host sampler was called in a way, or answered in a way, that no arm can use."""


class ClassOutOfRangeError(HostSamplerError, IndexError):
    """A class id outside the host's ``indices_class`` (an IndexError too, as indexing would raise)."""


def check_class(c: int, n: int, indices_class: Sequence[Any]) -> None:
    """Refuse a class id outside ``0 .. len(indices_class) - 1`` (in every arm, before any draw)."""
    try:
        classes = len(indices_class)
    except TypeError:  # a container without a length: nothing to check against
        return
    if not 0 <= c < classes:
        raise ClassOutOfRangeError(f"get_images({c}, {n}): class {c} is out of range; the host sampler has classes "
                               f"0..{classes - 1} (indices_class)" + ("; a negative id would silently read class "
                                                                      f"{classes + c}" if -classes <= c < 0 else ""))


def whole_pool_note(c: int, n: int, pool_size: int) -> str:
    """The record note (and warning) when ``n`` exceeds the class pool."""
    return (f"get_images({c}, {n}): n exceeds the {pool_size} images of class {c}; the whole class pool is "
            "returned, as the host sampler does")


def check_answer(out: Any, c: int, n: int, pool_size: int) -> str:
    """'' when ``out`` is a tensor of ``min(n, pool_size)`` images, else the one-line problem."""
    if not isinstance(out, torch.Tensor):
        return (f"the host sampler's get_images({c}, {n}) returned {type(out).__name__}, not a tensor of images")
    expected = min(n, pool_size) if pool_size else n
    got = int(out.shape[0]) if out.dim() >= 1 else 0
    if out.dim() < 1 or got != expected:
        whole = f" (the whole class pool when n exceeds its {pool_size} images)" if n > pool_size > 0 else ""
        return (f"the host sampler's get_images({c}, {n}) returned {got} images (shape {tuple(out.shape)}); "
                f"expected {expected}{whole}")
    return ""
