"""Built-in selection strategies."""

from .base import EmbeddingStrategy, NoOptions, Strategy
from .coreset import HerdingStrategy, KCenterStrategy, herding_order, kcenter_order
from .dream import DreamOptions, DreamStrategy, KMeansOptions
from .precomputed import PrecomputedOptions, PrecomputedStrategy
from .random import RandomStrategy

BUILTIN_STRATEGIES: tuple[type[Strategy], ...] = (
    RandomStrategy, DreamStrategy, HerdingStrategy, KCenterStrategy, PrecomputedStrategy,
)

__all__ = [
    "BUILTIN_STRATEGIES",
    "DreamOptions",
    "DreamStrategy",
    "EmbeddingStrategy",
    "HerdingStrategy",
    "KCenterStrategy",
    "KMeansOptions",
    "NoOptions",
    "PrecomputedOptions",
    "PrecomputedStrategy",
    "RandomStrategy",
    "Strategy",
    "herding_order",
    "kcenter_order",
]
