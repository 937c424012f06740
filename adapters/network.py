"""Where an adapter gets the network it embeds real images with.

DREAM clusters a class in the embedding space of the network the host is training *right now*.
Host codebases re-create that network inside their training loop, so adapters never hold the
network itself: they hold a zero-argument callable (``net=lambda: net``) and call it at selection
time. Initialisation is different: it happens before the host has built any network (or, in a
later experiment, while the name still points at the previous experiment's trained network, which
must not be used), so ``init`` calls always use ``net_factory()``, a fresh network built with the
host's own constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from dream_plugin.engine.embedding import resolve_embedder, unwrap_network
from dream_plugin.engine.host_state import preserved_rng

__all__ = ["NetworkSource", "ResolvedNetwork", "NoNetworkError", "make_normalizer"]


class NoNetworkError(RuntimeError):
    """A strategy that needs embeddings was asked to select, but no network is available."""


@dataclass
class ResolvedNetwork:
    """The network to embed with for one selection, and how."""

    network: nn.Module
    """The unwrapped module (no DataParallel / DDP / torch.compile wrapper)."""
    embed: Callable[[torch.Tensor], torch.Tensor]
    """images -> (B, D) features; normalisation (if any) is folded in."""
    source: str
    """Human-readable description, shown as ``SelectionRecord.embed_source``."""


def make_normalizer(
    normalize: Callable[[torch.Tensor], torch.Tensor] | tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """Turn ``normalize`` (a callable, or ``(mean, std)`` per channel) into a function and a label."""
    if normalize is None:
        return None, ""
    if callable(normalize):
        return normalize, "normalize callable"
    if isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        mean = torch.as_tensor(normalize[0], dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(normalize[1], dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean.numel() != std.numel() or mean.numel() == 0:
            raise ValueError(
                f"normalize=(mean, std) needs one mean and one std per channel, got {mean.numel()} means "
                f"and {std.numel()} stds"
            )
        if bool((std == 0).any()):
            raise ValueError("normalize=(mean, std): std must not contain zeros")

        def norm(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4 or x.shape[1] != mean.shape[1]:
                raise ValueError(
                    f"normalize=(mean, std) has {mean.shape[1]} channels but the images have shape "
                    f"{tuple(x.shape)}; expected (B, {mean.shape[1]}, H, W)"
                )
            return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)

        return norm, f"mean/std normalisation over {mean.shape[1]} channel(s)"
    raise TypeError(
        f"normalize must be a callable or a (mean, std) pair, got {type(normalize).__name__} {normalize!r}"
    )


class NetworkSource:
    """The live network (for matching / BN batches) and a fresh one (for initialisation).

    Parameters
    ----------
    net:
        Zero-argument callable returning the host's live network, e.g. ``lambda: net``; it is
        called at selection time so it sees the network the host uses at that moment. A
        ``NameError`` (the host has not assigned the name yet) or ``None`` means "no network yet".
        An ``nn.Module`` is also accepted (a network that never changes).
    net_factory:
        Zero-argument callable building a fresh network with the host's own constructor, e.g.
        ``lambda: get_network(args.model, channel, num_classes, im_size).to(args.device)``. Used
        for every ``init`` call (built once per source, then reused for all classes); the live
        ``net`` is never used for initialisation, since it may still be the previous experiment's
        trained network. It runs with every random generator saved and restored, so a host
        constructor that reseeds torch does not disturb the host's random stream.
    embed_fn:
        Optional ``fn(x)`` or ``fn(net, x)`` returning (B, D) features, when the network has no
        ``embed`` / ``features`` / ``return_features`` / last ``nn.Linear`` to use.
    normalize:
        For hosts whose sampler returns raw images (IDC): a callable, or ``(mean, std)``, applied
        to images before embedding only (the host still receives raw images).
    method:
        Embedding method for :func:`dream_plugin.engine.embedding.resolve_embedder` ('auto' by default).
    """

    def __init__(
        self,
        net: Callable[[], nn.Module | None] | nn.Module | None = None,
        net_factory: Callable[[], nn.Module] | None = None,
        embed_fn: Callable[..., torch.Tensor] | None = None,
        normalize: Any = None,
        *,
        method: str = "auto",
    ) -> None:
        if net is not None and not isinstance(net, nn.Module) and not callable(net):
            raise TypeError(
                f"net must be a zero-argument callable returning the live network (e.g. net=lambda: net) "
                f"or an nn.Module, got {type(net).__name__}"
            )
        if net_factory is not None and (isinstance(net_factory, nn.Module) or not callable(net_factory)):
            raise TypeError(
                "net_factory must be a zero-argument callable building a fresh network with the host's "
                f"constructor (e.g. net_factory=lambda: get_network(...)), got {type(net_factory).__name__}"
            )
        if embed_fn is not None and not callable(embed_fn):
            raise TypeError(f"embed_fn must be callable, got {type(embed_fn).__name__}")
        self._net = net
        self._factory = net_factory
        self.embed_fn = embed_fn
        self.method = method
        self._normalize, self._normalize_label = make_normalizer(normalize)
        self._init_network: nn.Module | None = None
        self._cache: tuple[int, str, ResolvedNetwork] | None = None

    @property
    def has_live_lookup(self) -> bool:
        """True when ``net`` is a lookup (``lambda: net``) that can show a newly built network."""
        return self._net is not None and not isinstance(self._net, nn.Module)

    @property
    def has_factory(self) -> bool:
        return self._factory is not None

    @property
    def normalizes(self) -> bool:
        return self._normalize is not None

    def reset(self) -> None:
        """Forget the fresh initialisation network (the next ``init`` call builds a new one)."""
        self._init_network = None
        self._cache = None

    # -- the networks -----------------------------------------------------------------------------
    def live(self) -> nn.Module | None:
        """The host's live network right now, or None when it has none yet."""
        if self._net is None:
            return None
        if isinstance(self._net, nn.Module):
            return self._net
        try:
            got = self._net()
        except NameError:  # includes UnboundLocalError / unassigned closure variables
            return None
        if got is not None and not isinstance(got, nn.Module):
            raise TypeError(f"net() must return an nn.Module or None, got {type(got).__name__}")
        return got

    def fresh(self) -> nn.Module:
        """The fresh network for initialisation (built on first use with ``net_factory``)."""
        if self._factory is None:
            raise NoNetworkError("no net_factory given")
        if self._init_network is None:
            with preserved_rng():  # a host constructor may reseed torch (DC's get_network does)
                built = self._factory()
            if not isinstance(built, nn.Module):
                raise TypeError(f"net_factory() must return an nn.Module, got {type(built).__name__}")
            # our own network: eval mode, so initialisation features do not depend on chunking
            built.eval()
            self._init_network = built
        return self._init_network

    # -- resolution -------------------------------------------------------------------------------
    def resolve(self, kind: str, *, needs: bool = True, what: str = "") -> ResolvedNetwork | None:
        """The network and embedder for a call of ``kind``; None when there is none.

        With ``needs=True`` (the strategy embeds images) a missing network is a
        :class:`NoNetworkError` that says what to pass.
        """
        if kind == "init":
            if self._factory is None:
                if needs:
                    raise NoNetworkError(
                        f"{what}the init strategy embeds images, but initialisation runs before the host's "
                        "network exists (and a live net may be a previous experiment's stale network), so "
                        "it needs a fresh network: pass net_factory=lambda: <the host's own network "
                        "constructor> (e.g. net_factory=lambda: get_network(args.model, channel, "
                        "num_classes, im_size).to(args.device)), or use a random init strategy "
                        "(init.strategy: random / DREAM_INIT_STRATEGY=random)"
                    )
                return None
            return self._resolve(self.fresh(), "fresh network from net_factory")
        net = self.live()
        if net is None:
            if needs:
                if self._net is None:
                    hint = "no net= was given: pass net=lambda: net (the host's live network)"
                else:
                    hint = "net() returned None or raised NameError (the host has no network yet)"
                raise NoNetworkError(
                    f"{what}the {kind!r} strategy embeds images with the live network, but {hint}"
                )
            return None
        return self._resolve(net, "live network")

    def _resolve(self, net: nn.Module, origin: str) -> ResolvedNetwork:
        if self._cache is not None and self._cache[0] == id(net) and self._cache[1] == origin:
            cached = self._cache[2]
            if cached.network is unwrap_network(net):
                return cached
        inner = unwrap_network(net)
        embedder, how = resolve_embedder(inner, embed_fn=self.embed_fn, method=self.method)
        source = f"{origin} {type(inner).__name__}"
        if inner is not net:
            source += f" (unwrapped from {type(net).__name__})"
        source += f" via {how}"
        if self._normalize is not None:
            norm = self._normalize
            source += f" on normalised images ({self._normalize_label})"

            def embed(x: torch.Tensor, _e=embedder, _n=norm) -> torch.Tensor:
                return _e(_n(x))
        else:
            embed = embedder
        resolved = ResolvedNetwork(network=inner, embed=embed, source=source)
        self._cache = (id(net), origin, resolved)
        return resolved
