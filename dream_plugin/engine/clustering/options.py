"""k-means settings as one validated, frozen object (the ``kmeans`` section of a strategy's options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dream_plugin.common.errors import ConfigError


@dataclass(frozen=True)
class KMeansOptions:
    """k-means settings shared by the clustering strategies."""

    max_iter: int = 100
    tol: float = 1e-4
    init: Literal["k-means++", "k-means++-sampled", "random"] = "k-means++"
    backend: Literal["torch", "sklearn", "fast_pytorch_kmeans", "faiss"] = "torch"
    chunk_size: int = 4096
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """Distance matmuls: fp32, or on CUDA tf32 / bf16 (torch backend; CPU always runs fp32)."""
    seeding: Literal["direct", "pairwise", "blocked"] | None = None
    """How k-means++ gets its distances (torch backend); None is the engine's default, ``blocked``."""
    n_local_trials: int | None = None
    """k-means++ candidates per step (torch backend): None is 2 + ln K (greedy), 1 classic k-means++."""

    def engine_settings(self) -> dict[str, object]:
        """The settings every k-means call takes (``kmeans``, ``kmeans_batched``, ``run_kmeans``).

        ``init`` and ``backend`` are left out: callers replace ``init`` by a warm start, and only
        ``run_kmeans`` takes a backend.
        """
        out: dict[str, object] = {
            "max_iter": self.max_iter, "tol": self.tol, "chunk_size": self.chunk_size,
            "precision": self.precision, "n_local_trials": self.n_local_trials,
        }
        if self.seeding is not None:
            out["seeding"] = self.seeding
        return out

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ConfigError(f"max_iter: {self.max_iter!r} is not allowed; expected an integer >= 1")
        if self.tol < 0:
            raise ConfigError(f"tol: {self.tol!r} is not allowed; expected a number >= 0")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: {self.chunk_size!r} is not allowed; expected an integer >= 1")
        if self.precision != "fp32" and self.backend != "torch":
            raise ConfigError(
                f"precision: {self.precision!r} needs backend 'torch' (got backend {self.backend!r})"
            )
        if self.seeding is not None and self.backend != "torch":
            raise ConfigError(f"seeding: {self.seeding!r} needs backend 'torch' (got backend {self.backend!r})")
        if self.n_local_trials is not None:
            if self.n_local_trials < 1:
                raise ConfigError(
                    f"n_local_trials: {self.n_local_trials!r} is not allowed; expected an integer >= 1 or null"
                )
            if self.backend != "torch":
                raise ConfigError(
                    f"n_local_trials: {self.n_local_trials!r} needs backend 'torch' (got backend {self.backend!r})"
                )
