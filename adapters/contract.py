"""The written interface every adapter implements, and the harness's loops draw through.

* :class:`Adapter` -- every adapter: it selects through one :class:`~dream_plugin.Selector` and
  shows that selector's records.
* :class:`KindSampler` -- an adapter answering ``init(c, n)`` and ``match(c, n)`` with images of
  class ``c`` (:class:`~dream_plugin.adapters.ClassSampler`, :class:`~dream_plugin.adapters.GetImagesAdapter`).
* :class:`HostLoopSampler` -- a kind sampler that also answers ``bn(c, n)``: what a host's
  distillation loop calls (:class:`~dream_plugin.adapters.GetImagesAdapter`; the A/B harness's
  ``Sampler``).

The protocols are ``runtime_checkable``: ``isinstance(obj, KindSampler)`` checks the names only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from dream_plugin.core.requests import SelectionRecord
    from dream_plugin.core.selector import Selector

__all__ = ["Adapter", "HostLoopSampler", "KindSampler"]


@runtime_checkable
class Adapter(Protocol):
    """An adapter: it asks one selector and shows that selector's records."""

    selector: Selector

    @property
    def records(self) -> list[SelectionRecord]: ...


@runtime_checkable
class KindSampler(Adapter, Protocol):
    """An adapter answering one class's images per call kind."""

    def init(self, c: int, n: int) -> torch.Tensor: ...

    def match(self, c: int, n: int) -> torch.Tensor: ...


@runtime_checkable
class HostLoopSampler(KindSampler, Protocol):
    """A kind sampler that also draws BatchNorm-statistics batches: what a host's loop calls."""

    def bn(self, c: int, n: int) -> torch.Tensor: ...
