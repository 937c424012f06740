"""The strategy interface: an estimator-like object with validated options and its own caches."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dream_plugin.core.requests import SelectionRequest, SelectionResult


@dataclass(frozen=True)
class NoOptions:
    """A strategy without options."""


class Strategy:
    """Base class of selection strategies.

    Subclasses set ``name``, ``description``, ``Options`` (a frozen dataclass validated from the
    ``options.<name>`` config section) and implement :meth:`select`. One instance serves one
    selector, so per-class caches live on the instance, never in module globals.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    needs_embeddings: ClassVar[bool] = False

    def __init__(self, options: object | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def select(self, request: SelectionRequest) -> SelectionResult:
        """Return ``request.n`` distinct positions into ``request.pool``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget cached picks (e.g. between experiments)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to answer as this instance would (picklable); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class EmbeddingStrategy(Strategy):
    """A strategy that works on the pool's embeddings under the live network."""

    needs_embeddings = True

    def embed_pool(self, request: SelectionRequest) -> tuple[torch.Tensor, float]:
        """Embed every image of the class pool without side effects; returns (features, seconds)."""
        from dream_plugin.engine.embedding import embed_images

        if request.embed is None:
            raise ValueError(
                f"strategy {self.name!r} needs embeddings, but no network is available for the "
                f"{request.kind!r} call of class {request.class_id}: pass the live network "
                "(e.g. net=lambda: net) or a network factory for initialisation"
            )
        start = time.perf_counter()
        feats = embed_images(
            request.embed,
            request.load,
            request.pool_size,
            batch_size=request.embed_batch_size,
            device=request.device,
            network=request.network,
        )
        return feats, time.perf_counter() - start
