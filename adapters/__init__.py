"""Adapters: thin wrappers over each host codebase's own sampler (shipped as ``dream_plugin.adapters``).

The user passes the host's own sampler in and gets a drop-in replacement; which strategy answers
(the host's random sampling or DREAM) is config / ``DREAM_STRATEGY``, never a code edit.

* :mod:`~dream_plugin.adapters.get_images` -- DC/DSA, DM, MTT: ``get_images(c, n)``;
* :mod:`~dream_plugin.adapters.idc` -- IDC and the official DREAM code: the class loader's ``class_sample``;
* :mod:`~dream_plugin.adapters.mtt` -- MTT init, optional representative expert batches;
* :mod:`~dream_plugin.adapters.generic` -- a per-class sampler and a class-balanced batch sampler;
* :mod:`~dream_plugin.adapters.network` -- the live / fresh network and its embedder;
* :mod:`~dream_plugin.adapters.contract` -- the interface they implement (``Adapter``, ``KindSampler``,
  ``HostLoopSampler``).
"""

from .contract import Adapter, HostLoopSampler, KindSampler
from .generic import ClassSampler, RepresentativeBatchSampler, make_class_sampler
from .get_images import AmbiguousCallError, GetImagesAdapter, wrap_get_images
from .idc import ClassLoaderAdapter, wrap_class_loader
from .mtt import RepresentativeBatches, wrap_mtt_get_images
from .network import NetworkSource, NoNetworkError, ResolvedNetwork

__all__ = [
    "Adapter",
    "AmbiguousCallError",
    "ClassLoaderAdapter",
    "ClassSampler",
    "GetImagesAdapter",
    "HostLoopSampler",
    "KindSampler",
    "NetworkSource",
    "NoNetworkError",
    "RepresentativeBatchSampler",
    "RepresentativeBatches",
    "ResolvedNetwork",
    "make_class_sampler",
    "wrap_class_loader",
    "wrap_get_images",
    "wrap_mtt_get_images",
]
