"""The names the A/B harness knows: initialisations, augmentation operations and arms (no imports; the loop
methods are registered in :mod:`dream_plugin.harness.ab.methods`)."""

from __future__ import annotations

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
"""Every arm is a :class:`~dream_plugin.core.config.Settings` for a fresh selector: (strategy, init.strategy)."""

ARM_FORMS = ("a named arm, or any registered strategy S as 'S' (S for init and matching), "
             "'match:S' (random init, S's matching batches) or 'init:S' (S's init, random matching batches)")
"""What ``--arms`` accepts besides the named arms (a plugin's strategy included)."""


def arm_strategies(arm: str) -> tuple[str, str] | None:
    """(matching strategy, init strategy) of ``arm``, or None when it has none of the forms of :data:`ARM_FORMS`.

    Whether the strategies exist is the caller's check (it needs the plugin manager).
    """
    if arm in ARMS:
        return ARMS[arm]
    kind, sep, name = arm.partition(":")
    if not sep:
        return (arm, arm) if arm else None
    if not name or ":" in name:
        return None
    return {"match": (name, "random"), "init": ("random", name)}.get(kind)


def arm_file_name(arm: str) -> str:
    """``arm`` as a file-name part (``match:S`` -> ``match-S``)."""
    return arm.replace(":", "-")

ARM_DESCRIPTIONS = {
    "random": "the hosts' baseline: random real images for init and for every matching batch",
    "dream": "DREAM: representative (k-means) init and representative matching batches",
    "init-only": "representative init, random matching batches",
    "match-only": "random init, representative matching batches",
    "dream+": "DREAM+: representative init, matching batches of the s images nearest each of n/s centroids",
    "herding": "herding picks for init and matching (coreset baseline)",
    "kcenter": "greedy k-center picks for init and matching (coreset baseline)",
}
