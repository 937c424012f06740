"""Built-in selection strategies."""

from .base import EmbeddingStrategy, NoOptions, Strategy
from .coreset import HerdingStrategy, KCenterStrategy, herding_order, kcenter_order
from .dream import DreamOptions, DreamStrategy, KMeansOptions
from .precomputed import PrecomputedOptions, PrecomputedStrategy
from .random import RandomStrategy
from .stratified import StratifiedOptions, StratifiedStrategy, proportional_draw

BUILTIN_STRATEGIES: tuple[type[Strategy], ...] = (
    RandomStrategy, DreamStrategy, StratifiedStrategy, HerdingStrategy, KCenterStrategy, PrecomputedStrategy,
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
    "StratifiedOptions",
    "StratifiedStrategy",
    "herding_order",
    "kcenter_order",
    "proportional_draw",
]
