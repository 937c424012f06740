"""Settings of ``dream-plugin diagnose`` (validated, with errors that name the option)."""

from __future__ import annotations

from dataclasses import dataclass

from dream_plugin.harness.ab.distances import GRADIENT_METRICS
from dream_plugin.core.config import ConfigError

STRATEGIES = ("random", "dream", "dream+", "herding", "kcenter")
"""The default strategies; ``--strategies`` takes these and any other registered strategy (a plugin's too)."""
EMBED_INPUTS = ("normalized", "raw")


@dataclass(frozen=True)
class DiagnoseConfig:
    """What to measure: which networks, strategies and batch sizes, on which data."""

    dataset: str = "mnist"
    root: str | None = None
    networks: tuple[str, ...] = ("fresh", "trained:100")
    """Each is ``fresh``, ``trained:K`` (K SGD steps on random real batches), ``factory:module:function``
    (a zero-argument callable returning the network) or ``checkpoint:PATH`` (a state_dict for the
    ConvNet of ``width``/``depth``)."""
    strategies: tuple[str, ...] = STRATEGIES
    sizes: tuple[int, ...] = (8, 32, 64)
    draws: int = 30
    """Random batches per class and size (their spread is the yardstick for the other strategies)."""
    subsample: int = 4
    """DREAM+ s: n/s centroids, the s images nearest each (sizes not divisible by s are skipped)."""
    width: int = 32
    depth: int = 3
    norm: str = "instancenorm"
    embed_input: str = "normalized"
    """What the embedding sees: ``normalized`` images (as the network is trained and as the hosts' DC/DM
    code embeds) or ``raw`` [0, 1] pixels (as the official DREAM code embeds with a network trained on
    normalised ones). Gradients are always taken on normalised images."""
    metric: str = "l1"
    """The matching distance strategies are compared by (``distance`` and ``vs random`` in the table)."""
    train_batch: int = 128
    train_lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1

    def validate(self) -> "DiagnoseConfig":
        if not self.networks:
            raise ConfigError("networks (--networks): give at least one network")
        for spec in self.networks:
            kind, _, rest = spec.partition(":")
            if kind == "fresh" and not rest:
                continue
            if kind == "trained" and rest.isdigit():
                continue
            if kind in ("factory", "checkpoint") and rest:
                continue
            raise ConfigError(f"networks (--networks): {spec!r} is not allowed; expected fresh, trained:K, "
                              "factory:module:function or checkpoint:PATH")
        from dream_plugin.core.manager import build_plugin_manager, collect_strategies

        known = sorted(set(collect_strategies(build_plugin_manager())) | {"dream+"})
        for s in self.strategies:
            if s not in known:
                raise ConfigError(f"strategies (--strategies): {s!r} is not allowed; expected any registered "
                                  "strategy: " + ", ".join(known))
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ConfigError(f"sizes (--sizes): {list(self.sizes)!r} is not allowed; expected batch sizes >= 1")
        for name, value, low in (("draws (--draws)", self.draws, 2), ("subsample (--subsample)", self.subsample, 1),
                                 ("width (--width)", self.width, 1), ("depth (--depth)", self.depth, 1),
                                 ("train_batch", self.train_batch, 1)):
            if value < low:
                raise ConfigError(f"{name}: {value!r} is not allowed; expected an integer >= {low}")
        if self.embed_input not in EMBED_INPUTS:
            raise ConfigError(f"embed_input (--embed-input): {self.embed_input!r} is not allowed; expected one of "
                              + ", ".join(EMBED_INPUTS))
        if self.metric not in GRADIENT_METRICS:
            raise ConfigError(f"metric (--metric): {self.metric!r} is not allowed; expected one of "
                              + ", ".join(GRADIENT_METRICS))
        return self
