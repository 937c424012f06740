"""Drop-in replacement for IDC's class-wise real-data loader (also the official DREAM code's).

IDC (snu-mllab/Efficient-Dataset-Condensation) and the official DREAM fork keep the real data in a
loader object that is

* iterated (``for img, lab in loader``) to train the network, and asked for ``len()`` and ``.device``;
* asked ``class_sample(c)`` (no size) for the real batch of class ``c`` to match against
  (``batch_size`` random images of the class);
* asked ``class_sample(c, k)`` with ``k > 0`` for the class's *first* k images: that is how IDC
  initialises the synthetic set (k = ipc, or ipc * factor**2 for multi-formation), and how the
  official DREAM code fetches a whole class (k = the class size).

``class_sample`` returns ``(images, labels)``: raw images in [0, 1] (the host normalises later,
inside its augmentation) and int64 labels, on the host's device.

:class:`ClassLoaderAdapter` wraps such a loader: iteration, ``len()``, ``.device`` and every other
attribute go to the wrapped loader untouched; only ``class_sample`` is replaced. Kinds: no size
(or a size <= 0) is ``match``; a positive size is ``init`` (when ``images_per_class`` is given,
only those sizes are ``init`` and other sizes are ``match`` batches of that size), except the
whole-class request, which is passed through unchanged. With the random arm (``random`` strategy)
the original ``class_sample`` answers with exactly the host's arguments, so initialisation still
gets the first ipc images and matching the host's random batch. With DREAM the images are
normalised (``normalize=``) for embedding only; the returned images stay raw.

A host bug gets the same answer in every arm (see :mod:`~dream_plugin.adapters.host_answer`):

* a size above the class (``class_sample(c, ipc)`` with ipc > class size): IDC's ``cls_idx[c][:ipc]``
  returns the whole class, so every arm does (the non-host arms with a warning and a record note);
* a class id out of range, negative included (``cls_idx[-1]`` would silently read the last
  class): refused in every arm before anything is drawn, naming the call (``class_sample(-1)``);
* a host answer that is not ``(images, labels)`` with a tensor of ``min(ipc, class size)`` images
  (``min(batch_size, class size)`` for ``class_sample(c)``): refused naming the call, the record noting it.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch

from dream_plugin.core.selector import Selector

from ._common import as_sizes, check_class_n, default_selector, select_positions, uses_host
from .host_answer import HostSamplerError, call_text, check_answer, check_class, checked_host_call, whole_pool_note
from .network import NetworkSource

__all__ = ["ClassLoaderAdapter", "wrap_class_loader"]

_DEFAULT = object()


class ClassLoaderAdapter:
    """An IDC-style class loader whose ``class_sample`` asks the configured strategy.

    Parameters
    ----------
    loader:
        The host's loader (``ClassDataLoader``, ``ClassMemDataLoader`` or anything with
        ``class_sample(c, n)`` returning ``(images, labels)``).
    net, net_factory, embed_fn:
        As for :class:`~dream_plugin.adapters.network.NetworkSource`: ``net=lambda: model`` (the
        live model), ``net_factory=lambda: define_model(args, nclass).to(device)`` for ``init``.
    normalize:
        A callable or ``(mean, std)``: how the host normalises images before its network sees them
        (IDC: ``(MEANS[args.dataset], STDS[args.dataset])``); used for embedding only.
    selector:
        A :class:`dream_plugin.Selector` (default: from $DREAM_PLUGIN_CONFIG / environment).
    images_per_class:
        ipc, or a sequence of init sizes. An int ``ipc`` also counts ``ipc * init.factor**2`` (the
        multi-formation size, ``init.factor`` from the selector's settings) as an init size.
    match_n:
        Size of a ``class_sample(c)`` batch in the DREAM arm (default: ``loader.batch_size``, capped
        at the class size as IDC's own per-class sampler does).
    class_sizes:
        Images per class, for loaders without ``cls_idx`` (a sequence, or a callable ``c -> size``).
    pool_access:
        ``"auto"`` (default): read images straight from ``loader.data`` by ``loader.cls_idx`` when
        the loader keeps them in memory (IDC's ``ClassMemDataLoader``), otherwise fetch each
        class once with ``loader.class_sample(c, class_size)`` and cache it (as the official DREAM
        code does); ``"index"`` or ``"materialize"`` force one of the two.
    """

    def __init__(
        self,
        loader: Any,
        *,
        net: Any = None,
        net_factory: Callable[[], torch.nn.Module] | None = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
        selector: Selector | None = None,
        images_per_class: int | Sequence[int] | None = None,
        match_n: int | None = None,
        class_sizes: Sequence[int] | Callable[[int], int] | None = None,
        pool_access: str = "auto",
    ) -> None:
        if not callable(getattr(loader, "class_sample", None)):
            raise TypeError(
                f"loader must have a class_sample(c, n) method returning (images, labels), got {type(loader).__name__}"
            )
        if pool_access not in ("auto", "index", "materialize"):
            raise ValueError(f"pool_access must be 'auto', 'index' or 'materialize', got {pool_access!r}")
        if pool_access == "index" and not _has_index_access(loader):
            raise TypeError("pool_access='index' needs a loader with .data and .cls_idx (like IDC's ClassMemDataLoader)")
        if class_sizes is not None and not callable(class_sizes) and not hasattr(class_sizes, "__getitem__"):
            raise TypeError(f"class_sizes must be a sequence or a callable c -> size, got {type(class_sizes).__name__}")
        object.__setattr__(self, "_loader", loader)
        self.selector = default_selector(selector)
        self.source = NetworkSource(net=net, net_factory=net_factory, embed_fn=embed_fn, normalize=normalize)
        sizes = as_sizes(images_per_class, "images_per_class")
        if len(sizes) == 1:
            factor = self.selector.settings.init.factor
            sizes = tuple(dict.fromkeys((sizes[0], sizes[0] * factor**2)))
        self.init_sizes = sizes
        if match_n is not None and (isinstance(match_n, bool) or not hasattr(match_n, "__index__") or match_n < 1):
            raise TypeError(f"match_n must be a positive int or None, got {match_n!r}")
        self.match_n = match_n
        self.class_sizes = class_sizes
        self.pool_access = pool_access
        self._cache: dict[int, torch.Tensor] = {}
        self._warned_raw = False
        self._warned_whole_pool: set[tuple[int, int]] = set()

    # -- proxying ---------------------------------------------------------------------------------
    @property
    def loader(self) -> Any:
        """The wrapped host loader (the host sampler: its ``class_sample`` answers the random arm)."""
        return object.__getattribute__(self, "_loader")

    @property
    def host_sampler(self) -> Any:
        """The host sampler, as every adapter names it: here the wrapped loader."""
        return self.loader

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_loader":
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_loader"), name)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def device(self) -> Any:
        return self.loader.device

    @property
    def records(self) -> list:
        return self.selector.records

    # -- the host's calls -------------------------------------------------------------------------
    def class_sample(self, c: int, ipc: Any = _DEFAULT) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of class ``c``; see the module docstring for how the kind is chosen."""
        given = ipc is not _DEFAULT and ipc is not None
        if given:
            c, k = check_class_n(c, ipc)
        else:
            c, _ = check_class_n(c, 0)
            k = 0
        call = call_text("class_sample", c, k) if given else call_text("class_sample", c)
        self._check_class(c, call)  # every arm, before any draw (see adapters.host_answer)
        if k <= 0:
            return self._answer("match", c, None, given, ipc, call)
        if k in self.init_sizes:
            return self._answer("init", c, k, given, ipc, call)
        size = self._class_size(c, required=False)
        kind = "match" if self.init_sizes else "init"
        if size is not None and k == size:  # whole class: a fetch, not a selection (recorded as such)
            return checked_host_call(
                self.selector, kind, c, k, size, lambda: self.loader.class_sample(c, ipc),
                lambda out: check_answer(out, c, k, size, call=call, pair=True, size_name="ipc"),
                note="whole class: n equals the class size, nothing to select",
            )
        return self._answer(kind, c, k, given, ipc, call)

    def init_sample(self, c: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initialisation images of class ``c`` (host random arm: its first n images)."""
        c, n = check_class_n(c, n)
        call = self._sized_call("init_sample", c, n)
        return self._answer("init", c, n, True, n, call)

    def match_sample(self, c: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A real batch of class ``c`` to match against (n: default as for ``class_sample(c)``)."""
        if n is None:
            c, _ = check_class_n(c, 0)
            call = call_text("class_sample", c)
            self._check_class(c, call)
            return self._answer("match", c, None, False, None, call)
        c, n = check_class_n(c, n)
        call = self._sized_call("match_sample", c, n)
        return self._answer("match", c, n, True, n, call)

    def _sized_call(self, method: str, c: int, n: int) -> str:
        """The host call an explicit ``init_sample`` / ``match_sample`` makes in the random arm, checked."""
        if n < 1:  # class_sample(c, n <= 0) is the host's random batch: not n images, in no arm
            raise ValueError(f"{method}({c}, {n}): n must be >= 1, got {n}; for the host's random batch of class "
                             f"{c} call match_sample({c}) (class_sample({c}))")
        call = call_text("class_sample", c, n)
        self._check_class(c, call)
        return call

    def _check_class(self, c: int, call: str) -> None:
        """Refuse a class id the host has not (negative included), naming the host call."""
        classes = self._classes()
        if classes is not None:
            check_class(c, None, classes[0], call=call, where=classes[1])

    def _classes(self) -> tuple[Any, str] | None:
        """What the host indexes by class, and its name: ``cls_idx``, ``nclass`` or ``class_sizes``."""
        loader = self.loader
        cls_idx = getattr(loader, "cls_idx", None)
        if cls_idx is not None and hasattr(cls_idx, "__len__"):
            return cls_idx, "cls_idx"
        nclass = getattr(loader, "nclass", None)
        if not isinstance(nclass, bool) and isinstance(nclass, int):
            return range(nclass), "nclass"
        if self.class_sizes is not None and not callable(self.class_sizes) and hasattr(self.class_sizes, "__len__"):
            return self.class_sizes, "class_sizes"
        return None

    # -- answering --------------------------------------------------------------------------------
    def _answer(self, kind: str, c: int, n: int | None, given: bool, ipc: Any,
                call: str) -> tuple[torch.Tensor, torch.Tensor]:
        if uses_host(self.selector, kind):
            size = self._class_size(c, required=False)
            shown = n if n is not None else self._default_match_n(c, required=False) or 0
            expected = n if n is not None else self._host_batch_size()  # class_sample(c): the host's batch_size
            size_name = "ipc" if n is not None else "batch_size"
            fn = (lambda: self.loader.class_sample(c, ipc)) if given else (lambda: self.loader.class_sample(c))
            return checked_host_call(
                self.selector, kind, c, shown, size or 0, fn,
                lambda out: check_answer(out, c, expected, size, call=call, pair=True, size_name=size_name),
            )
        if n is None:
            n = self._default_match_n(c, required=True)
        pool, load = self._pool(c, kind)
        if n > pool.numel():  # the host's cls_idx[c][:ipc] returns the whole class here: so does every arm
            return self._whole_pool(kind, c, n, pool, load, call)
        positions = select_positions(self.selector, self.source, kind, c, n, pool, load)
        if not self.source.normalizes and not self._warned_raw and self.selector.records[-1].embed_source != "none":
            self._warned_raw = True
            warnings.warn(
                "ClassLoaderAdapter: no normalize= given, so DREAM embeds the loader's raw images; pass "
                "normalize=(mean, std) (IDC: MEANS[args.dataset], STDS[args.dataset]) to embed what the "
                "network sees",
                RuntimeWarning,
                stacklevel=3,
            )
        images = load(positions)
        labels = torch.full((n,), c, dtype=torch.int64, device=images.device)
        return images, labels

    def _whole_pool(self, kind: str, c: int, n: int, pool: torch.Tensor, load: Callable[[torch.Tensor], torch.Tensor],
                    call: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image of class ``c``, in the host's order, as the host sampler answers a size above the class."""
        size = int(pool.numel())
        message = whole_pool_note(c, n, size, call=call, size_name="ipc")
        if (c, n) not in self._warned_whole_pool:
            self._warned_whole_pool.add((c, n))
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        self.selector.record_host_call(kind, c, n, 0.0, answered_by="adapter (whole class pool)", pool_size=size,
                                       strategy=self.selector.strategy_name(kind), note=message)
        images = load(torch.arange(size, dtype=torch.int64))
        return images, torch.full((size,), c, dtype=torch.int64, device=images.device)

    def _host_batch_size(self) -> int | None:
        """The host's ``batch_size``: its ``class_sample(c)`` answers that many images, capped at the class size."""
        bs = getattr(self.loader, "batch_size", None)
        if isinstance(bs, bool) or not hasattr(bs, "__index__") or int(bs) < 1:
            return None
        return int(bs)

    def _default_match_n(self, c: int, *, required: bool) -> int | None:
        n = self.match_n if self.match_n is not None else getattr(self.loader, "batch_size", None)
        if n is None:
            if required:
                raise TypeError(
                    "class_sample(c) without a size: the adapter needs the batch size; pass match_n= "
                    "(the loader has no batch_size attribute)"
                )
            return None
        size = self._class_size(c, required=False)
        return min(int(n), size) if size is not None else int(n)

    def _class_size(self, c: int, *, required: bool) -> int | None:
        cs = self.class_sizes
        if cs is not None:
            return int(cs(c) if callable(cs) else cs[c])
        cls_idx = getattr(self.loader, "cls_idx", None)
        if cls_idx is not None:
            return len(cls_idx[c])
        if required:
            raise TypeError(
                f"cannot tell how many images class {c} has: the loader has no cls_idx; pass class_sizes= "
                "(a list, or a callable c -> size)"
            )
        return None

    def _pool(self, c: int, kind: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        loader = self.loader
        use_index = self.pool_access == "index" or (self.pool_access == "auto" and _has_index_access(loader))
        if use_index:
            pool = torch.as_tensor(list(loader.cls_idx[c]), dtype=torch.int64).reshape(-1)
            data = loader.data
            convert = getattr(loader, "convert", None)

            def load(positions: torch.Tensor) -> torch.Tensor:
                idx = pool[positions].tolist()
                out = torch.stack([data[i] for i in idx])
                return convert(out) if convert is not None else out

            return pool, load
        cached = self._cache.get(c)
        if cached is None:
            size = self._class_size(c, required=True)
            got = loader.class_sample(c, size)  # the whole class, as the official DREAM code fetches it
            problem = check_answer(got, c, size, size, call=call_text("class_sample", c, size), pair=True,
                                   size_name="ipc")
            if problem:
                self.selector.record_host_call(kind, c, size, 0.0, pool_size=size, note=f"unusable answer: {problem}; "
                                               "fetching the class pool")
                raise HostSamplerError(problem)
            cached = got[0]
            self._cache[c] = cached
        cls_idx = getattr(loader, "cls_idx", None)
        if cls_idx is not None and len(cls_idx[c]) == cached.shape[0]:
            pool = torch.as_tensor(list(cls_idx[c]), dtype=torch.int64).reshape(-1)
        else:
            pool = torch.arange(cached.shape[0], dtype=torch.int64)
        images = cached

        def load_cached(positions: torch.Tensor) -> torch.Tensor:
            return images[positions.to(images.device)]

        return pool, load_cached

    def reset(self) -> None:
        """Forget cached picks, cached class images and the fresh init network."""
        self.selector.reset()
        self.source.reset()
        self._cache.clear()


def _has_index_access(loader: Any) -> bool:
    data = getattr(loader, "data", None)
    return data is not None and hasattr(data, "__getitem__") and getattr(loader, "cls_idx", None) is not None


def wrap_class_loader(loader: Any, **kwargs: Any) -> ClassLoaderAdapter:
    """Function form: ``loader_real = wrap_class_loader(loader_real, net=lambda: model, ...)``."""
    return ClassLoaderAdapter(loader, **kwargs)
