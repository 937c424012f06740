"""The same answer to a host bug in every arm of an adapter that wraps a host sampler.

The random arm is the host's own sampler, unchanged: whatever it accepts, the other arms accept too,
and whatever makes its answer unusable is refused in every arm with one message that names the
host sampler's call (and noted in the records). Each adapter names its own host call in the
messages (:func:`call_text`): ``get_images(3, 20)`` (DC/DSA, DM, MTT), ``class_sample(3, 20)`` or
``class_sample(3)`` (IDC's class loader).

* a size above the class pool: the hosts' ``np.random.permutation(indices_class[c])[:n]`` and IDC's
  ``cls_idx[c][:ipc]`` return the whole pool; the other arms then return the whole pool too, with a
  warning and a record note (:func:`whole_pool_note`).
* a class id out of range, negative included (``indices_class[-1]`` / ``cls_idx[-1]`` would silently
  read the last class): refused in every arm before anything is drawn (:func:`check_class`).
* a size below 1 in a ``get_images(c, n)`` call (the host's ``permutation(...)[:0]`` is no image,
  ``[:-k]`` all but the last k): refused in every arm before anything is drawn (:func:`check_size`).
* a host answer that is not a tensor of ``min(n, pool)`` images (for IDC: not ``(images, labels)``
  with such a tensor first): refused naming the call (:func:`check_answer`,
  :func:`checked_host_call`); a batch of a host loader that is iterated (MTT's expert batches) that is
  not ``(images, labels)`` with at least one image: likewise (:func:`check_batch`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch

from ._common import HOST_SAMPLER


class HostSamplerError(ValueError):
    """The host sampler was called in a way, or answered in a way, that no arm can use."""


class ClassOutOfRangeError(HostSamplerError, IndexError):
    """A class id outside the host's per-class lists (an IndexError too, as indexing would raise)."""


def call_text(name: str, *args: Any) -> str:
    """How a host call is named in every message: ``call_text("class_sample", 3)`` -> ``'class_sample(3)'``."""
    return f"{name}({', '.join(str(a) for a in args)})"


def check_class(c: int, n: Any, indices_class: Sequence[Any], *, call: str | None = None,
                where: str = "indices_class") -> None:
    """Refuse a class id outside ``0 .. len(indices_class) - 1`` (in every arm, before any draw).

    ``indices_class`` is whatever the host indexes by class (``indices_class``, IDC's ``cls_idx``);
    ``where`` names it in the message, ``call`` names the host call (default ``get_images(c, n)``).
    """
    try:
        classes = len(indices_class)
    except TypeError:  # a container without a length: nothing to check against
        return
    if not 0 <= c < classes:
        call = call if call is not None else call_text("get_images", c, n)
        raise ClassOutOfRangeError(f"{call}: class {c} is out of range; the host sampler has classes "
                                   f"0..{classes - 1} ({where})" + ("; a negative id would silently read class "
                                                                    f"{classes + c}" if -classes <= c < 0 else ""))


def check_size(c: int, n: int) -> None:
    """Refuse ``get_images(c, n)`` with ``n < 1`` in every arm, before any draw.

    The hosts' ``np.random.permutation(indices_class[c])[:n]`` gives no image for 0 and all but the
    last ``-n`` images for a negative ``n``: no arm can answer that as the host meant it.
    """
    if n < 1:
        got = "no image" if n == 0 else f"all but the last {-n} image{'s' if n < -1 else ''} of the class"
        raise HostSamplerError(f"{call_text('get_images', c, n)}: n must be >= 1 in every arm; the host sampler's "
                               f"permutation(indices_class[{c}])[:{n}] would return {got}")


def whole_pool_note(c: int, n: int, pool_size: int, *, call: str | None = None, size_name: str = "n") -> str:
    """The record note (and warning) when the size asked for (``size_name``) exceeds the class pool."""
    call = call if call is not None else call_text("get_images", c, n)
    return (f"{call}: {size_name} exceeds the {pool_size} images of class {c}; the whole class pool is "
            "returned, as the host sampler does")


def check_answer(out: Any, c: int, n: int | None, pool_size: int | None, *, call: str | None = None,
                 pair: bool = False, size_name: str = "n") -> str:
    """'' when ``out`` is a tensor of ``min(n, pool_size)`` images, else the one-line problem.

    ``pair``: the host answers ``(images, labels)`` (IDC's ``class_sample``); only the images are
    checked (IDC's in-memory loader answers ``batch_size`` labels whatever the number of images).
    An unknown ``n`` (None) or ``pool_size`` (None or 0) checks only what is known: at least one
    image, and no more than ``n``.
    """
    call = call if call is not None else call_text("get_images", c, n)
    images = out
    if pair:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            shown = f"{type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
            return f"the host sampler's {call} returned {shown}, not a pair (images, labels)"
        images = out[0]
        if not isinstance(images, torch.Tensor):
            return (f"the host sampler's {call} returned images of type {type(images).__name__}, "
                    "not a tensor of images")
    elif not isinstance(out, torch.Tensor):
        return f"the host sampler's {call} returned {type(out).__name__}, not a tensor of images"
    got = int(images.shape[0]) if images.dim() >= 1 else 0
    if n is not None and pool_size:
        expected = min(n, pool_size)
        if images.dim() >= 1 and got == expected:
            return ""
        whole = f" (the whole class pool when {size_name} exceeds its {pool_size} images)" if n > pool_size else ""
        return (f"the host sampler's {call} returned {got} images (shape {tuple(images.shape)}); "
                f"expected {expected}{whole}")
    if images.dim() >= 1 and 1 <= got and (n is None or got <= n):
        return ""
    allowed = f"between 1 and {n} (the class size is not known)" if n is not None else "at least 1"
    return f"the host sampler's {call} returned {got} images (shape {tuple(images.shape)}); expected {allowed}"


def check_batch(batch: Any, index: int) -> str:
    """'' when a batch of the host's loader is ``(images, labels, ...)`` with at least one image, else the problem.

    For adapters that iterate the host's own loader (MTT's expert-training ``DataLoader``): the size
    of a batch is not fixed (the last one may be short), so only its shape of answer is checked.
    """
    call = f"batch {index} (iterating it, counting from 0)"
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        shown = f"{type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        return f"the host sampler's {call} is {shown}, not (images, labels)"
    images = batch[0]
    if not isinstance(images, torch.Tensor):
        return f"the host sampler's {call} has images of type {type(images).__name__}, not a tensor of images"
    if images.dim() < 1 or images.shape[0] < 1:
        return (f"the host sampler's {call} has {int(images.shape[0]) if images.dim() else 0} images "
                f"(shape {tuple(images.shape)}); expected at least 1")
    return ""


def checked_host_call(selector: Any, kind: str, c: int, n: int, pool_size: int, fn: Callable[[], Any],
                      problem_of: Callable[[Any], str], *, note: str = "",
                      answered_by: str = HOST_SAMPLER) -> Any:
    """Run the host sampler, record it once, and refuse an unusable answer.

    ``problem_of(answer)`` is '' for a usable answer, else the one-line problem: then the record's
    note starts ``unusable answer: <problem>`` and :class:`HostSamplerError` is raised with the problem.
    """
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    problem = problem_of(out)
    if problem:
        note = f"unusable answer: {problem}" + (f"; {note}" if note else "")
    selector.record_host_call(kind, c, n, seconds, answered_by=answered_by, pool_size=pool_size, note=note)
    if problem:
        raise HostSamplerError(problem)
    return out
