"""Feature extraction with the host's *current* network.

DREAM clusters each class's real images in the feature space of the network
being trained right now, so the embedder is the live network itself (not a
copy, not a fixed backbone). :func:`resolve_embedder` finds how to get
features out of a network from the common dataset-distillation codebases;
:func:`embed_images` runs it over a pool of images in chunks without touching
the host's state (see :mod:`dream_plugin.engine.host_state`).

Supported shapes of network (``method="auto"`` tries them in this order):

=====================  =======================================================
user ``embed_fn``      ``fn(x)`` or ``fn(net, x)`` (``net`` is the unwrapped
                       network)
``embed``              ``net.embed(x)`` — ConvNets of DC/DSA/DM
                       (VICO-UoE/DatasetCondensation)
``features``           ``net.features(x)`` then flatten — MTT's ConvNet
``return_features``    ``net(x, return_features=True)`` — IDC's ConvNet; when
                       the result is a tuple/list (IDC returns
                       ``(logits, features)``) its last element is used
``last_linear``        the input of the last ``nn.Linear`` (registration
                       order), captured by a pre-hook that exists only for
                       the duration of the call
=====================  =======================================================
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Union

import torch
from torch import Tensor, nn

from dream_plugin.common.inputs import as_int, check_not_meta, is_integer
from dream_plugin.engine.host_state import no_side_effects

__all__ = ["Embedder", "unwrap_network", "resolve_embedder", "embed_images", "METHODS"]

Embedder = Callable[[Tensor], Tensor]
"""images ``(B, C, H, W)`` -> features ``(B, D)``."""

EmbedFn = Union[Embedder, Callable[[nn.Module, Tensor], Tensor]]

METHODS = ("auto", "embed", "features", "return_features", "last_linear")

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap_network(net: nn.Module) -> nn.Module:
    """Strip ``DataParallel`` / ``DistributedDataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers, repeatedly.

    Embedding goes through the inner module: a DDP forward would run
    collectives and (``broadcast_buffers=True``) write rank 0's buffers into
    this rank's buffers in place.
    """
    seen = set()
    while id(net) not in seen:
        seen.add(id(net))
        if isinstance(net, _WRAPPERS):
            net = net.module
            continue
        inner = getattr(net, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            net = inner
            continue
        break
    return net


def _as_2d(out: object, batch: int, what: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{what} returned {type(out).__name__}, expected a tensor of features"
        )
    if out.dim() < 2 or out.shape[0] != batch:
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)} for a batch of {batch} images; "
            "expected (batch, features), further dimensions flattened; a 1-D output is one number per image, "
            "not a feature vector"
        )
    return out.reshape(batch, -1)


def _n_required_positional(fn: Callable) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _accepts_kwarg(fn: Callable, name: str, allow_var_kw: bool) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if name in params and params[name].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    ):
        return True
    return allow_var_kw and any(p.kind is p.VAR_KEYWORD for p in params.values())


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear] | None:
    found = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    return found


# -------------------------------------------------------------- the embedders


def _user_embedder(net: nn.Module, fn: EmbedFn) -> tuple[Embedder, str]:
    if not callable(fn):
        raise TypeError(f"embed_fn must be callable, got {type(fn).__name__}")
    two_args = _n_required_positional(fn) == 2

    def embed(x: Tensor) -> Tensor:
        out = fn(net, x) if two_args else fn(x)
        return _as_2d(out, x.shape[0], "embed_fn")

    return embed, "user embed_fn"


def _embed_method(net: nn.Module) -> tuple[Embedder, str]:
    def embed(x: Tensor) -> Tensor:
        return _as_2d(net.embed(x), x.shape[0], "net.embed")

    return embed, "net.embed"


def _features_method(net: nn.Module) -> tuple[Embedder, str]:
    def embed(x: Tensor) -> Tensor:
        return _as_2d(net.features(x), x.shape[0], "net.features")

    return embed, "net.features + flatten"


def _return_features_method(net: nn.Module) -> tuple[Embedder, str]:
    def embed(x: Tensor) -> Tensor:
        out = net(x, return_features=True)
        if isinstance(out, (tuple, list)):
            if not out:
                raise ValueError("net(x, return_features=True) returned an empty sequence")
            out = out[-1]  # IDC: (logits, features)
        return _as_2d(out, x.shape[0], "net(x, return_features=True)")

    return embed, "net(x, return_features=True)"


def _last_linear_method(net: nn.Module, name: str, linear: nn.Linear) -> tuple[Embedder, str]:
    label = name or "<root>"

    def embed(x: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def hook(_module, args, kwargs):
            inp = args[0] if args else kwargs.get("input")
            captured.append(inp)

        handle = linear.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            net(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(
                f"the last Linear layer {label!r} of {type(net).__name__} was not called "
                "by its forward; pass embed_fn=... to say how to embed images"
            )
        return _as_2d(captured[-1], x.shape[0], f"input of Linear {label!r}")

    return embed, f"input of last Linear {label!r}"


def resolve_embedder(
    net: nn.Module,
    *,
    embed_fn: EmbedFn | None = None,
    method: str = "auto",
) -> tuple[Embedder, str]:
    """Find how to turn images into features with ``net`` (unwrapped first).

    Returns ``(embedder, description)``; the embedder maps ``(B, C, H, W)``
    images to ``(B, D)`` features. ``method`` is one of :data:`METHODS`;
    ``"auto"`` tries, in order, ``embed_fn``, a ``net.embed`` method, a
    ``net.features`` submodule, a forward accepting ``return_features`` and the
    input of the last ``nn.Linear``. ``embed_fn`` may take ``(x)`` or
    ``(net, x)``; the latter receives the unwrapped network.

    The embedder does not guard the host's state by itself: call it through
    :func:`embed_images` (or inside :func:`~dream_plugin.engine.host_state.no_side_effects`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}; allowed: {', '.join(METHODS)}")
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    inner = unwrap_network(net)
    if embed_fn is not None:
        if method != "auto":
            raise ValueError(f"embed_fn was given together with method={method!r}; "
                             "use method='auto' (or leave embed_fn out)")
        return _user_embedder(inner, embed_fn)
    return _auto_embedder(inner) if method == "auto" else _named_embedder(inner, method)


def _named_embedder(inner: nn.Module, method: str) -> tuple[Embedder, str]:
    """The embedder ``method`` names; a TypeError when ``inner`` does not offer it."""
    cls = type(inner).__name__
    if method == "embed":
        if not callable(getattr(inner, "embed", None)):
            raise TypeError(f"method='embed' but {cls} has no callable 'embed'")
        return _embed_method(inner)
    if method == "features":
        if not callable(getattr(inner, "features", None)):
            raise TypeError(f"method='features' but {cls} has no callable 'features'")
        return _features_method(inner)
    if method == "return_features":
        if not _accepts_kwarg(inner.forward, "return_features", allow_var_kw=True):
            raise TypeError(f"method='return_features' but {cls}.forward takes no 'return_features' argument")
        return _return_features_method(inner)
    last = _last_linear(inner)  # method == "last_linear"
    if last is None:
        raise TypeError(f"method='last_linear' but {cls} has no nn.Linear layer")
    return _last_linear_method(inner, *last)


def _auto_embedder(inner: nn.Module) -> tuple[Embedder, str]:
    """The first embedder ``inner`` offers, in :data:`METHODS` order; a TypeError naming the choices if none."""
    embed_attr = getattr(inner, "embed", None)
    # only a method counts, not e.g. an nn.Embedding called 'embed'
    if callable(embed_attr) and not isinstance(embed_attr, nn.Module):
        return _embed_method(inner)
    if isinstance(getattr(inner, "features", None), nn.Module):
        return _features_method(inner)
    if _accepts_kwarg(inner.forward, "return_features", allow_var_kw=False):
        return _return_features_method(inner)
    last = _last_linear(inner)
    if last is not None:
        return _last_linear_method(inner, *last)
    raise TypeError(
        f"cannot tell how to embed images with {type(inner).__name__}: give embed_fn=... (fn(x) or "
        "fn(net, x) returning (B, D) features), or use a network with an 'embed' method, "
        "a 'features' submodule, a forward accepting 'return_features', or an nn.Linear layer"
    )


# ------------------------------------------------------------------ embedding


def _first_param(net: nn.Module | None) -> Tensor | None:
    if net is None:
        return None
    for p in net.parameters():
        return p
    for b in net.buffers():
        return b
    return None


def embed_images(
    embedder: Embedder,
    images: Tensor | Callable[[Tensor], Tensor],
    n: int | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    network: nn.Module | None = None,
    normalize: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Embed a pool of images in chunks, without side effects on ``network``.

    ``images`` is a tensor ``(N, ...)`` or a loader ``load(positions) ->
    images`` (``positions`` a CPU ``LongTensor`` of indices into ``range(n)``)
    given together with ``n``; the loader lets the host keep its images where
    they are. Each chunk is moved to ``device`` (default: the device of the
    network's first parameter, else the images' device), cast to the
    network's parameter dtype, passed through ``normalize`` (if given) and the
    embedder, all under :func:`~dream_plugin.engine.host_state.no_side_effects`.

    Chunks hold at most ``batch_size`` images and are balanced (sizes differ by
    at most one), so no tiny tail chunk is fed to a train-mode BatchNorm.
    Note that with train-mode BatchNorm the features depend on which images
    share a chunk, as they do in the host's own train-mode forward passes.

    Returns detached float32 features ``(N, D)`` on the target device.
    """
    if not is_integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    check_not_meta(network)
    total, tensor_pool, load = _pool_source(images, n)
    ref = _first_param(network)
    target = _target_device(device, ref, tensor_pool)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else None
    _init_cuda_before_snapshot(target)
    bounds = _balanced_bounds(total, batch_size)
    out: Tensor | None = None
    with no_side_effects(network):
        for start, stop in zip(bounds[:-1], bounds[1:]):
            chunk = tensor_pool[start:stop] if tensor_pool is not None else _load_chunk(load, start, stop)
            feats, chunk_device = _embed_chunk(embedder, chunk, target, dtype, normalize)
            if out is None:
                out = torch.empty(total, feats.shape[1], dtype=torch.float32, device=chunk_device)
            elif feats.shape[1] != out.shape[1]:
                raise ValueError(f"feature size changed between chunks ({out.shape[1]} then "
                                 f"{feats.shape[1]}, images {start}:{stop})")
            out[start:stop] = feats.to(device=out.device, dtype=torch.float32)
    assert out is not None
    bad = int((~torch.isfinite(out)).any(dim=1).sum())
    if bad:
        raise ValueError(f"embeddings contain NaN/inf for {bad} of {total} images; "
                         "check the network and the image normalisation")
    return out


def _embed_chunk(embedder: Embedder, chunk: Tensor, target: torch.device | None, dtype: torch.dtype | None,
                 normalize: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, torch.device]:
    """``(detached features, the device they were computed on)`` of one chunk, moved, cast and normalised."""
    n_images = chunk.shape[0]
    if not chunk.is_floating_point():
        raise TypeError(f"images must be floating point, got dtype {chunk.dtype}; "
                        "convert (and normalise) them before embedding")
    chunk_device = target if target is not None else chunk.device
    chunk = chunk.to(device=chunk_device, dtype=dtype or chunk.dtype)
    if normalize is not None:
        chunk = normalize(chunk)
    return _as_2d(embedder(chunk), n_images, "the embedder").detach(), chunk_device


def _pool_source(
    images: Tensor | Callable[[Tensor], Tensor], n: int | None
) -> tuple[int, Tensor | None, Callable[[Tensor], Tensor] | None]:
    """``(pool size, the images tensor or None, the loader or None)``, validated."""
    if isinstance(images, Tensor):
        if images.dim() == 0:
            raise ValueError("images must be a tensor (N, ...), got a scalar")
        if n is not None and n != images.shape[0]:
            raise ValueError(f"n={n} but the images tensor holds {images.shape[0]} images")
        total, tensor_pool, load = images.shape[0], images, None
    elif callable(images):
        if n is None:
            raise TypeError("a loader callable needs n= (the pool size)")
        total, tensor_pool, load = as_int(n, "n"), None, images
    else:
        raise TypeError(
            f"images must be a tensor or a loader callable, got {type(images).__name__}"
        )
    if total < 1:
        raise ValueError("cannot embed an empty pool")
    return total, tensor_pool, load


def _target_device(device: torch.device | str | None, ref: Tensor | None, pool: Tensor | None) -> torch.device | None:
    """Where chunks are embedded: ``device``, else the network's, else the images'; None: the loader's, per chunk."""
    if device is not None:
        return torch.device(device)
    if ref is not None:
        return ref.device
    return pool.device if pool is not None else None


def _init_cuda_before_snapshot(target: torch.device | None) -> None:
    """Initialise CUDA (and its lazily seeded generators) *before* the RNG snapshot of
    :func:`~dream_plugin.engine.host_state.no_side_effects`, so the CUDA generator states are captured and restored too."""
    if target is not None and target.type == "cuda" and not torch.cuda.is_initialized():
        torch.cuda.init()


def _balanced_bounds(total: int, batch_size: int) -> list[int]:
    """Chunk boundaries: at most ``batch_size`` images per chunk, sizes differing by at most one."""
    n_chunks = math.ceil(total / batch_size)
    base, extra = divmod(total, n_chunks)
    bounds = [0]
    for i in range(n_chunks):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return bounds


def _load_chunk(load: Callable[[Tensor], Tensor] | None, start: int, stop: int) -> Tensor:
    """Images ``start:stop`` of a loader-backed pool, checked."""
    assert load is not None
    chunk = load(torch.arange(start, stop, dtype=torch.long))
    if not isinstance(chunk, Tensor):
        raise TypeError(f"the image loader returned {type(chunk).__name__}, expected a tensor")
    if chunk.dim() == 0 or chunk.shape[0] != stop - start:
        raise ValueError(f"the image loader returned shape {tuple(chunk.shape)} for {stop - start} positions")
    return chunk
