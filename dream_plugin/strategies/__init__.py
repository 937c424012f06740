"""Built-in selection strategies."""

from .base import EmbeddingStrategy, NoOptions, Strategy
from .coreset import HerdingStrategy, KCenterStrategy, herding_order, kcenter_order
from .dream import DreamOptions, DreamStrategy, KMeansOptions
from .random import RandomStrategy

BUILTIN_STRATEGIES: tuple[type[Strategy], ...] = (RandomStrategy, DreamStrategy, HerdingStrategy, KCenterStrategy)

__all__ = [
    "BUILTIN_STRATEGIES",
    "DreamOptions",
    "DreamStrategy",
    "EmbeddingStrategy",
    "HerdingStrategy",
    "KCenterStrategy",
    "KMeansOptions",
    "NoOptions",
    "RandomStrategy",
    "Strategy",
    "herding_order",
    "kcenter_order",
]
