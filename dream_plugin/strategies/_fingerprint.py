"""Has anything that an embedding depends on changed? Cheap, conservative fingerprints.

The DREAM strategy may reuse a class pool's embeddings when the network, the embedding function and
the images are exactly those of the last embedding. "Exactly" is checked without reading any
tensor data:

* small CPU tensors (up to 65,536 elements, e.g. a class's index list) are compared by value;
* every other parameter and buffer of the network (and of any module an embedding or loading closure
  captures) must be the *same tensor object* (held by weak reference, so a freed network whose
  memory is reused by a new one never matches), with the same ``data_ptr``, shape, dtype, device
  and autograd version counter (bumped by every in-place write: ``optimizer.step()``, BatchNorm
  running-statistics updates, ``load_state_dict``, ``p.data.copy_``...), and every module must be in
  the same train/eval mode;
* the embedding function and the image loader must run the same code over the same captured
  values (closure cells, defaults, ``functools.partial`` arguments and bound ``self`` are
  followed; tensors are compared as above, plain scalars by value).

Anything we cannot see through (a NumPy array, a custom object with hidden state, an inference
tensor without a version counter) makes the request uncacheable: we then re-embed, as before.
"""

from __future__ import annotations

import functools
import types
import weakref
from typing import Any

import torch
from torch import nn

__all__ = ["Fingerprint", "fingerprint"]

_PLAIN = (type(None), bool, int, float, str, bytes, complex, torch.device, torch.dtype)
_MAX_ITEMS = 256
_MAX_DEPTH = 6


class Uncacheable(Exception):
    """The object's state cannot be fingerprinted cheaply and safely."""


class Fingerprint:
    """A value key plus weak identities; equal only if both match and the referents are alive."""

    __slots__ = ("key", "refs")

    def __init__(self, key: tuple, refs: list[weakref.ref]) -> None:
        self.key = key
        self.refs = refs

    def matches(self, other: "Fingerprint") -> bool:
        if self.key != other.key or len(self.refs) != len(other.refs):
            return False
        for a, b in zip(self.refs, other.refs):
            obj = a()
            if obj is None or obj is not b():
                return False
        return True


_BY_VALUE = 1 << 16  # small CPU tensors (index lists, pools) are compared by value


def _tensor(t: torch.Tensor, refs: list) -> tuple:
    if t.device.type == "cpu" and t.numel() <= _BY_VALUE and not t.requires_grad and t.layout == torch.strided:
        try:
            data = t.detach().contiguous().numpy().tobytes()
        except (RuntimeError, TypeError):  # e.g. bfloat16 has no NumPy dtype
            data = None
        if data is not None:
            return ("Tv", t.dtype, tuple(t.shape), data)
    try:
        version = t._version
    except RuntimeError:  # inference tensors have no version counter
        raise Uncacheable("inference tensor") from None
    refs.append(weakref.ref(t))
    return ("T", t.data_ptr(), version, tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


def _module(m: nn.Module, refs: list, seen: set[int]) -> tuple:
    if id(m) in seen:
        return ("M-seen", len(refs))
    seen.add(id(m))
    refs.append(weakref.ref(m))
    parts: list[Any] = ["M"]
    for name, p in m.named_parameters(remove_duplicate=False):
        parts.append((name, _tensor(p, refs), p.requires_grad))
    for name, b in m.named_buffers(remove_duplicate=False):
        parts.append((name, _tensor(b, refs)))
    parts.append(tuple(sub.training for sub in m.modules()))
    parts.append(tuple(getattr(sub, "track_running_stats", None) for sub in m.modules()))
    return tuple(parts)


def _walk(obj: Any, refs: list, seen: set[int], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise Uncacheable("too deep")
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, torch.Tensor):
        return _tensor(obj, refs)
    if isinstance(obj, nn.Module):
        return _module(obj, refs, seen)
    if isinstance(obj, (tuple, list)):
        if len(obj) > _MAX_ITEMS:
            raise Uncacheable("long sequence")
        return (type(obj).__name__,) + tuple(_walk(v, refs, seen, depth + 1) for v in obj)
    if isinstance(obj, dict):
        if len(obj) > _MAX_ITEMS:
            raise Uncacheable("large dict")
        return ("dict",) + tuple((k, _walk(v, refs, seen, depth + 1)) for k, v in obj.items() if isinstance(k, str))
    if isinstance(obj, types.MethodType):
        return ("bound", _walk(obj.__func__, refs, seen, depth + 1), _walk(obj.__self__, refs, seen, depth + 1))
    if isinstance(obj, functools.partial):
        return (
            "partial",
            _walk(obj.func, refs, seen, depth + 1),
            _walk(obj.args, refs, seen, depth + 1),
            _walk(dict(obj.keywords), refs, seen, depth + 1),
        )
    if isinstance(obj, types.FunctionType):
        cells = tuple(c.cell_contents if _filled(c) else "<empty>" for c in (obj.__closure__ or ()))
        return (
            "fn",
            obj.__code__,  # held strongly in the key (compared by value: same code, same behaviour)
            _walk(cells, refs, seen, depth + 1),
            _walk(obj.__defaults__ or (), refs, seen, depth + 1),
            _walk(obj.__kwdefaults__ or {}, refs, seen, depth + 1),
        )
    if isinstance(obj, types.BuiltinFunctionType):
        return ("builtin", getattr(obj, "__module__", None), obj.__qualname__)
    raise Uncacheable(f"cannot see through {type(obj).__name__}")


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def fingerprint(*objs: Any) -> Fingerprint | None:
    """A :class:`Fingerprint` of ``objs`` (networks, callables, tensors, scalars) or None if unsafe."""
    refs: list[weakref.ref] = []
    try:
        key = tuple(_walk(o, refs, set(), 0) for o in objs)
    except (Uncacheable, TypeError):
        return None
    return Fingerprint(key, refs)
