"""Selection strategies: the base classes a plugin subclasses and the built-in ones."""

from dream_plugin.strategies.base import EmbeddingStrategy, NoOptions, Strategy
from dream_plugin.strategies.coreset import HerdingStrategy, KCenterStrategy, herding_order, kcenter_order
from dream_plugin.strategies.dream import DreamOptions, DreamStrategy, KMeansOptions
from dream_plugin.strategies.precomputed import PrecomputedOptions, PrecomputedStrategy
from dream_plugin.strategies.random import RandomStrategy

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
