"""The loop methods of ``dream-plugin ab`` (``--method``): the one place where a method is registered.

A method is a :class:`~dream_plugin.harness.ab.methods.base.LoopMethod`, one module each (dm, dc,
idc); the rest of the harness asks the method object (``cfg.loop``) instead of comparing names.
The built-in methods are registered below, explicitly, in ``--method`` order. The registry is a
module-level dict, the harness's only global state besides the plugin manager; a test or an
extension adds a method with :func:`register_method` and takes it out with
:func:`unregister_method`. (``--jobs`` workers are fresh processes: they know only the methods
registered when this package is imported.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from dream_plugin.common.errors import check_allowed
from dream_plugin.harness.ab.methods.base import LoopCost, LoopMethod
from dream_plugin.harness.ab.methods.dc import DC
from dream_plugin.harness.ab.methods.dm import DM
from dream_plugin.harness.ab.methods.idc import IDC

__all__ = ["METHODS", "LoopCost", "LoopMethod", "get_method", "register_method", "registered_methods",
           "unregister_method"]

_REGISTRY: dict[str, LoopMethod] = {}


def register_method(method: LoopMethod) -> LoopMethod:
    """Add ``method`` under its name; ValueError naming it if a method of that name is registered."""
    if not isinstance(method, LoopMethod):
        raise TypeError(f"register_method takes a LoopMethod, got {type(method).__name__}")
    if method.name in _REGISTRY:
        raise ValueError(f"a loop method named {method.name!r} is registered already; "
                         "choose another name, or unregister_method it first")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> LoopMethod:
    """Take the method ``name`` out of the registry and return it; KeyError naming it if there is none."""
    if name not in _REGISTRY:
        raise KeyError(f"no loop method named {name!r} is registered; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY.pop(name)


def get_method(name: Any) -> LoopMethod:
    """The method named ``name``; the configuration's error for any other value (``method (--method)``),
    listing the registered methods. This is where a method name is validated."""
    check_allowed(isinstance(name, str) and name in _REGISTRY, "method (--method)", name,
                  "one of " + ", ".join(repr(n) for n in _REGISTRY))
    return _REGISTRY[name]


def registered_methods() -> tuple[LoopMethod, ...]:
    """Every registered method, in registration order."""
    return tuple(_REGISTRY.values())


class _MethodNames(Sequence[str]):
    """The registered methods' names, read when used (``--method``'s choices follow the registry)."""

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # it changes with the registry

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


METHODS: Sequence[str] = _MethodNames()
"""The names of the registered methods, always current (``"dm", "dc", "idc"`` and any registered later)."""

register_method(DM)
register_method(DC)
register_method(IDC)
