"""Drop-in replacement for the ``get_images(c, n)`` closure of DC/DSA, DM and MTT.

Those hosts keep every training image in one tensor (``images_all``, already normalised, on the
host's device) and a list of per-class index lists (``indices_class``); ``get_images(c, n)``
returns ``n`` random images of class ``c``. The same function answers three kinds of call:

* ``init``  -- initialising the synthetic set from real images (n = ipc, once per class);
* ``match`` -- the real batch matched against in every outer iteration (n = batch_real);
* ``bn``    -- DC/DSA with BatchNorm networks: a small batch (n = 16) that only sets BN statistics.

:class:`GetImagesAdapter` keeps the host's function: when the configured strategy for a call's
kind is ``random`` (or ``host``, the default for BN batches) it calls the host sampler (the
host's own function, ``.host_sampler``) unchanged, so
the A/B random arm *is* the host's code path (same numpy RNG draws). Otherwise it asks the
selector (DREAM: k-means in the live network's embedding space) and returns
``images_all[chosen indices]``: exactly n rows, the host's device and dtype. Either way the call is
recorded and sent to ``selection_done`` observers.

Telling the kinds apart: the host passes only ``(c, n)``. Calls marked at their call sites
(``.init(c, n)`` / ``.match(c, n)`` / ``.bn(c, n)``, which ``dream-plugin integrate`` writes) are
never guessed. A plain call's kind is inferred only where it cannot be confused:

* ``init`` -- ``n == init_n`` while the host has not built a new network since the adapter was
  made (DC/DSA/DM initialise before the first ``get_network`` of the experiment; the adapter is
  re-made per experiment, so the previous experiment's stale network does not count);
* ``bn`` -- ``n == bn_n`` and the live network has a BatchNorm layer (DC/DSA send those batches
  only then; a plain ConvNet with ``--batch_real 16`` is therefore just ``match``);
* ``match`` -- everything else.

When a plain call still fits two kinds (a BN model with ``--batch_real 16``), the random arm does
not care: the host sampler answers every kind, unchanged. Only an arm that answers those kinds
differently (dream for matching, the host for BN batches) raises :class:`AmbiguousCallError` at
that call, naming the explicit methods. ``kind=`` fixes the kind of every call (MTT: ``"init"``).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable, Sequence

import torch
from torch import nn

from dream_plugin.common.inputs import check_pool_not_empty
from dream_plugin.core.requests import CALL_KINDS
from dream_plugin.core.selector import Selector

from ._common import HOST_SAMPLER, check_class_n, default_selector, host_call, select_positions, uses_host
from .host_answer import HostSamplerError, check_answer, check_class, check_size, whole_pool_note
from .network import NetworkSource, NoNetworkError

__all__ = ["GetImagesAdapter", "wrap_get_images", "AmbiguousCallError"]


class AmbiguousCallError(ValueError):
    """``get_images(c, n)`` cannot tell which kind of call this is from ``n`` alone."""


class GetImagesAdapter:
    """``get_images(c, n)`` with the configured strategy choosing the images.

    Parameters
    ----------
    get_images:
        The host's own ``get_images(c, n)``; called unchanged for the random arm and BN batches.
    images_all:
        The host's tensor of all training images (N, C, H, W), on the host's device.
    indices_class:
        ``indices_class[c]`` lists the indices into ``images_all`` of class ``c`` (lists, arrays or
        tensors).
    net:
        ``lambda: net``: the host's live network, looked up at each call (NameError / None: none yet).
    net_factory:
        Zero-argument callable building a fresh network with the host's constructor; used for
        ``init`` calls (required when the init strategy embeds images, e.g. dream).
    embed_fn:
        Optional custom embedding ``fn(x)`` / ``fn(net, x)``.
    normalize:
        Only if ``images_all`` holds raw images: a callable or ``(mean, std)`` applied before
        embedding (the returned images are never changed). DC/DSA/DM/MTT images are normalised
        already: leave it None.
    selector:
        A :class:`dream_plugin.Selector`; default: one built from $DREAM_PLUGIN_CONFIG and the
        environment (``DREAM_STRATEGY`` is the A/B switch).
    init_n, bn_n, match_n:
        Sizes of ``init`` calls (ipc), ``bn`` calls (16 in DC/DSA) and ``match`` calls (batch_real);
        used only for plain (unmarked) calls. ``match_n`` lets the adapter see that a BN-sized
        call may also be a matching batch (then it is ambiguous, not silently ``bn``).
    kind:
        Fix the kind of every plain call (e.g. ``"init"`` for MTT, which calls get_images only to
        initialise); ``init_n`` / ``bn_n`` are then ignored by ``__call__``.
    """

    def __init__(
        self,
        get_images: Callable[[int, int], torch.Tensor],
        images_all: torch.Tensor,
        indices_class: Sequence[Any],
        *,
        net: Any = None,
        net_factory: Callable[[], torch.nn.Module] | None = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
        selector: Selector | None = None,
        init_n: int | None = None,
        bn_n: int | None = None,
        match_n: int | None = None,
        kind: str | None = None,
    ) -> None:
        if not callable(get_images):
            raise TypeError(f"get_images must be the host's callable get_images(c, n), got {type(get_images).__name__}")
        if not isinstance(images_all, torch.Tensor) or images_all.dim() < 1:
            raise TypeError(
                f"images_all must be the host's tensor of all images (N, C, H, W), got {type(images_all).__name__}"
            )
        if isinstance(indices_class, (str, bytes)) or not hasattr(indices_class, "__getitem__"):
            raise TypeError(
                f"indices_class must be a list of per-class index lists, got {type(indices_class).__name__}"
            )
        if kind is not None and kind not in CALL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CALL_KINDS)} or None, got {kind!r}")
        sizes = {}
        for name, v in (("init_n", init_n), ("bn_n", bn_n), ("match_n", match_n)):
            if v is None:
                continue
            if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) < 1:
                raise TypeError(f"{name} must be a positive int or None, got {v!r}")
            sizes[name] = int(v)
        self.host_sampler = get_images
        self.images_all = images_all
        self.indices_class = indices_class
        self.selector = default_selector(selector)
        self.source = NetworkSource(net=net, net_factory=net_factory, embed_fn=embed_fn, normalize=normalize)
        self.init_n = sizes.get("init_n")
        self.bn_n = sizes.get("bn_n")
        self.match_n = sizes.get("match_n")
        self.kind = kind
        self._pools: dict[int, torch.Tensor] = {}
        self._inferred_init: set[int] = set()
        self._warned_whole_pool: set[tuple[int, int]] = set()
        self._net_at_start = self._live_ref()

    # -- the host's call --------------------------------------------------------------------------
    @property
    def get_images_original(self) -> Callable[[int, int], torch.Tensor]:
        """The host sampler (older name of :attr:`host_sampler`)."""
        return self.host_sampler

    def __call__(self, c: int, n: int) -> torch.Tensor:
        c, n = check_class_n(c, n)
        kinds = self.candidate_kinds(c, n)
        if len(kinds) > 1:
            answerers = {self._answerer(k) for k in kinds}
            if answerers != {HOST_SAMPLER}:
                raise AmbiguousCallError(
                    f"get_images({c}, {n}) could be {_either(kinds)} call (" + self._sizes_text(n) + "), and "
                    f"this arm answers them differently ({', '.join(f'{k}: {self._answerer(k)}' for k in kinds)}); "
                    "mark the call sites with get_images.init(c, n) / .match(c, n) / .bn(c, n) "
                    "(`dream-plugin integrate PATH --apply` does it), or pass kind= to fix the kind of every call"
                )
            kind = kinds[0]
            return self._get(kind, c, n, inferred=True, note=f"kind not told apart ({' or '.join(kinds)}); "
                             "the host sampler answers both")
        if kinds[0] == "init" and self.kind is None:
            self._inferred_init.add(c)
        return self._get(kinds[0], c, n, inferred=self.kind is None)

    def candidate_kinds(self, c: int, n: int) -> list[str]:
        """The kinds a plain ``(c, n)`` call may be (one, unless it cannot be told apart)."""
        if self.kind is not None:
            return [self.kind]
        kinds = []
        if self.init_n == n and self._before_training(c):
            if self.source.has_live_lookup:  # no network built yet: matching has not started
                return ["init"]
            kinds.append("init")
        if self.bn_n == n and self._live_has_batchnorm() is not False:
            kinds.append("bn")
        if self.match_n == n or not kinds:
            kinds.append("match")
        return kinds

    def infer_kind(self, c: int, n: int) -> str:
        """The kind of a plain ``(c, n)`` call; raises :class:`AmbiguousCallError` when it fits several."""
        kinds = self.candidate_kinds(c, n)
        if len(kinds) > 1:
            raise AmbiguousCallError(f"get_images({c}, {n}) could be {_either(kinds)} call ({self._sizes_text(n)})")
        return kinds[0]

    def _sizes_text(self, n: int) -> str:
        names = [f"{name} == {n}" for name, v in (("init_n", self.init_n), ("bn_n", self.bn_n), ("match_n", self.match_n))
                 if v == n]
        return ", ".join(names) or f"n == {n}"

    def _answerer(self, kind: str) -> str:
        return HOST_SAMPLER if uses_host(self.selector, kind) else f"strategy:{self.selector.strategy_name(kind)}"

    def _live_ref(self) -> Any:
        try:
            live = self.source.live()
        except TypeError:
            return None
        return weakref.ref(live) if live is not None else None

    def _before_training(self, c: int) -> bool:
        """No network built since the adapter was made (or, without ``net=``, the class's first init-sized call)."""
        if self.source.has_live_lookup:
            live = self.source.live()
            if live is None:
                return True
            return self._net_at_start is not None and self._net_at_start() is live
        return c not in self._inferred_init

    def _live_has_batchnorm(self) -> bool | None:
        """Whether the live network has a BatchNorm layer (None: no live network to look at)."""
        live = self.source.live() if self.source.has_live_lookup else None
        if live is None:
            return None
        return any(isinstance(m, nn.modules.batchnorm._NormBase) and not isinstance(m, nn.modules.instancenorm._InstanceNorm)
                   for m in live.modules())

    def init(self, c: int, n: int | None = None) -> torch.Tensor:
        """Images to initialise class ``c`` of the synthetic set (n defaults to init_n)."""
        return self._explicit("init", c, n if n is not None else self.init_n, "init_n")

    def match(self, c: int, n: int | None = None) -> torch.Tensor:
        """The real batch of class ``c`` to match against (n defaults to match_n)."""
        return self._explicit("match", c, n if n is not None else self.match_n, "match_n")

    def bn(self, c: int, n: int | None = None) -> torch.Tensor:
        """A batch of class ``c`` for BatchNorm statistics (n defaults to bn_n)."""
        return self._explicit("bn", c, n if n is not None else self.bn_n, "bn_n")

    def whole(self, c: int, n: int | None = None) -> torch.Tensor:
        """Every image of class ``c``, through the host sampler: a pass-through fetch (nothing to select).

        For hosts that call ``get_images(c, len(indices_class[c]))`` (DATM's label-aware
        initialisation). Recorded as ``init`` before the first network, ``match`` after, with a note.
        """
        size = self._pool_size(c)
        c, n = check_class_n(c, size if n is None else n)
        if n != size:
            raise ValueError(f"get_images.whole({c}, {n}): class {c} has {size} images and whole() fetches all of them "
                             "(n = len(indices_class[c])); use .init / .match / .bn to select fewer")
        kind = "init" if self._before_training(c) else "match"
        return host_call(self.selector, kind, c, n, size, lambda: self.host_sampler(c, n),
                         note="whole class: n equals the class size, nothing to select")

    def _explicit(self, kind: str, c: int, n: int | None, size_name: str) -> torch.Tensor:
        if n is None:
            raise TypeError(f".{kind}(c) needs n (or pass {size_name}= to the adapter)")
        c, n = check_class_n(c, n)
        return self._get(kind, c, n, inferred=False)

    # -- answering --------------------------------------------------------------------------------
    @property
    def records(self) -> list:
        return self.selector.records

    def pool(self, c: int) -> torch.Tensor:
        """Host indices of class ``c`` as a CPU int64 tensor."""
        pool = self._pools.get(c)
        if pool is None:
            try:
                raw = self.indices_class[c]
            except (IndexError, KeyError):
                raise IndexError(
                    f"class {c} is not in indices_class (it has {len(self.indices_class)} classes)"
                ) from None
            pool = torch.as_tensor(raw if not isinstance(raw, torch.Tensor) else raw.detach().cpu()).reshape(-1)
            check_pool_not_empty(pool, c, f"indices_class[{c}]")  # an empty list would else read as float32
            if pool.dtype.is_floating_point or pool.dtype == torch.bool:
                raise TypeError(f"indices_class[{c}] must hold integer indices, got dtype {pool.dtype}")
            pool = pool.to("cpu", torch.int64)
            if pool.numel() and (int(pool.min()) < 0 or int(pool.max()) >= self.images_all.shape[0]):
                raise IndexError(
                    f"indices_class[{c}] holds indices outside images_all (0..{self.images_all.shape[0] - 1})"
                )
            self._pools[c] = pool
        return pool

    def _get(self, kind: str, c: int, n: int, *, inferred: bool, note: str = "") -> torch.Tensor:
        check_class(c, n, self.indices_class)  # every arm, before any draw (see adapters.host_answer)
        check_size(c, n)
        if uses_host(self.selector, kind):
            size = self._pool_size(c)
            out = host_call(self.selector, kind, c, n, size, lambda: self.host_sampler(c, n), note=note)
            problem = check_answer(out, c, n, size)
            if problem:
                self.selector.record_host_call(kind, c, n, 0.0, pool_size=size, note=f"unusable answer: {problem}")
                raise HostSamplerError(problem)
            return out
        pool = self.pool(c)
        images = self.images_all
        dev = images.device
        if n > pool.numel():  # the host sampler returns the whole pool here: so does every arm
            message = whole_pool_note(c, n, int(pool.numel()))
            if (c, n) not in self._warned_whole_pool:
                self._warned_whole_pool.add((c, n))
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            self.selector.record_host_call(kind, c, n, 0.0, answered_by="adapter (whole class pool)",
                                           pool_size=int(pool.numel()),
                                           strategy=self.selector.strategy_name(kind), note=message)
            return images[pool.to(dev)]

        def load(positions: torch.Tensor) -> torch.Tensor:
            return images[pool[positions].to(dev)]

        try:
            positions = select_positions(self.selector, self.source, kind, c, n, pool, load)
        except NoNetworkError as exc:
            if inferred and kind == "match" and self.init_n is None:
                raise NoNetworkError(
                    f"{exc}. If this get_images({c}, {n}) call initialises the synthetic set, pass "
                    "init_n=<ipc> to the adapter (or call .init(c, n)) so it is treated as initialisation"
                ) from None
            raise
        return images[pool[positions].to(dev)]

    def _pool_size(self, c: int) -> int:
        try:
            return len(self.indices_class[c])
        except Exception:  # noqa: BLE001 - only for the record
            return 0

    def reset(self) -> None:
        """Forget cached picks, the fresh init network and the init-call bookkeeping."""
        self.selector.reset()
        self.source.reset()
        self._inferred_init.clear()
        self._net_at_start = self._live_ref()


def _either(kinds: list[str]) -> str:
    return " or ".join(("an " if k == "init" else "a ") + k for k in kinds)


def wrap_get_images(
    get_images: Callable[[int, int], torch.Tensor],
    images_all: torch.Tensor,
    indices_class: Sequence[Any],
    **kwargs: Any,
) -> GetImagesAdapter:
    """Function form of :class:`GetImagesAdapter`: ``get_images = wrap_get_images(get_images, images_all,
    indices_class, net=lambda: net, net_factory=..., init_n=args.ipc, bn_n=16)``."""
    return GetImagesAdapter(get_images, images_all, indices_class, **kwargs)
