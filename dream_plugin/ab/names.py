"""The names the A/B harness knows: loop methods, initialisations, augmentation operations and arms (no imports)."""

from __future__ import annotations

METHODS = ("dm", "dc", "idc")
INITS = ("real", "noise")
AUG_OPS = ("crop", "scale", "flip")

ARMS: dict[str, tuple[str, str]] = {
    # arm: (strategy for matching batches, strategy for initialisation)
    "random": ("random", "random"),
    "dream": ("dream", "dream"),
    "init-only": ("random", "dream"),
    "match-only": ("dream", "random"),
    "dream+": ("dream", "dream"),
    "herding": ("herding", "herding"),
    "kcenter": ("kcenter", "kcenter"),
}
"""Every arm is a :class:`~dream_plugin.config.Settings` for a fresh selector: (strategy, init.strategy)."""

ARM_DESCRIPTIONS = {
    "random": "the hosts' baseline: random real images for init and for every matching batch",
    "dream": "DREAM: representative (k-means) init and representative matching batches",
    "init-only": "representative init, random matching batches",
    "match-only": "random init, representative matching batches",
    "dream+": "DREAM+: representative init, matching batches of the s images nearest each of n/s centroids",
    "herding": "herding picks for init and matching (coreset baseline)",
    "kcenter": "greedy k-center picks for init and matching (coreset baseline)",
}
