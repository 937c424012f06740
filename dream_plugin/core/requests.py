"""Typed objects that cross the hook boundary: what a host asks for and what a strategy reports.

A request describes one selection: which class, how many items, the class pool (indices into the
host's image store), how to load the pool's images, how to embed them with the network alive right
now, the host's step counter, a seeded generator and the device. Strategies return positions into
the pool, never host indices, so the same strategy works for any host layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

ImageLoader = Callable[[torch.Tensor], torch.Tensor]
"""``load(positions) -> images``: images of the given pool positions (1-D int64 tensor)."""

EmbedFn = Callable[[torch.Tensor], torch.Tensor]
"""``embed(images) -> features``: (B, ...) images to (B, D) features with the live network."""

CallKind = Literal["match", "init", "bn"]
CALL_KINDS: tuple[str, ...] = ("match", "init", "bn")


@dataclass
class SelectionRequest:
    """One call of ``select_real_batch`` or ``select_init_batch``.

    ``pool`` holds the host's indices of this class's images; the answer is positions into it.
    ``embed`` may be None when the host has no network yet and no factory was given: strategies
    that need embeddings then raise a clear error.
    """

    class_id: int
    n: int
    pool: torch.Tensor
    load: ImageLoader
    embed: EmbedFn | None
    step: int
    generator: torch.Generator
    device: torch.device
    kind: str = "match"
    network: torch.nn.Module | None = None
    embed_batch_size: int = 256
    embed_source: str = "none"
    context: dict[str, Any] = field(default_factory=dict)
    """Free for plugins' own use; the selector neither writes nor reads it."""

    @property
    def pool_size(self) -> int:
        return int(self.pool.numel())


@dataclass
class SelectionResult:
    """What a strategy returns: pool positions plus what it measured while choosing them."""

    positions: torch.Tensor
    reclustered: bool = False
    kmeans_iterations: int | None = None
    inertia: float | None = None
    duplicates_resolved: int = 0
    embed_seconds: float = 0.0
    cluster_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectionCall:
    """One validated host call, not answered yet: what the selector hands its answering path.

    ``call_index`` counts the calls answered before for this (kind, class); the request's
    generator is seeded from it. ``seed`` is that generator's seed, so a plugin's hook gets its
    own generator and whatever it draws never changes what the strategy draws.
    """

    request: SelectionRequest
    strategy: str
    call_index: int
    seed: int


@dataclass
class SelectionAnswer:
    """A checked answer to a :class:`SelectionCall`: positions, who answered, and its time."""

    result: SelectionResult
    positions: torch.Tensor
    answered_by: str
    seconds: float


@dataclass(frozen=True)
class SelectionRecord:
    """Diagnostics sent to ``selection_done`` observers after every selection.

    Draws the host's own sampler or loader answered are recorded too (``answered_by`` names it,
    ``note`` says why when it is not the A/B random arm, e.g. a whole-class fetch). ``class_id``
    is -1 for a batch that mixes every class (an expert-training batch from the host's loader).
    """

    strategy: str
    kind: str
    class_id: int
    n: int
    pool_size: int
    step: int
    seconds: float
    reclustered: bool
    kmeans_iterations: int | None
    inertia: float | None
    duplicates_resolved: int
    embed_seconds: float
    cluster_seconds: float
    embed_source: str
    answered_by: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
