"""What an (arm, seed) run of ``dream-plugin ab`` saves while it goes, so an interrupted run can continue.

At every evaluation point before the last, :class:`RunStore` saves (atomically, one file per run)
everything the rest of the run depends on: the synthetic set and its optimiser, the random states
of python, numpy (the host sampler's generator) and torch, the selector's call counters and
strategy caches, the loop method's own state (``LoopMethod.save_state``: the idc loop's matching
network with its optimiser), and what was measured so far.
A finished run is saved whole. A resumed run restores the state and continues from that point, so
it computes the same numbers as a run that was never interrupted (only its timings differ).

Layout: ``<out>/resume/<arm>-seed<seed>/state.pt`` and ``result.pt``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dream_plugin.common.paths import write_atomic
from dream_plugin.harness.ab.names import arm_file_name


def _save(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(data, tmp))


def _load(path: Path) -> Any:
    # our own files (written by _save), holding numpy random states and plain python objects
    return torch.load(path, map_location="cpu", weights_only=False)


def random_states() -> dict[str, Any]:
    """The global generators a host and the loops draw from."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunStore:
    """The saved state and result of one (arm, seed) run under ``root`` (``<out>/resume``)."""

    def __init__(self, root: str | Path, arm: str, seed: int) -> None:
        self.dir = Path(root) / f"{arm_file_name(arm)}-seed{seed}"
        self.state_path = self.dir / "state.pt"
        self.result_path = self.dir / "result.pt"

    def save_state(self, state: dict[str, Any]) -> None:
        _save(self.state_path, state)

    def load_state(self) -> dict[str, Any] | None:
        return _load(self.state_path) if self.state_path.is_file() else None

    def save_result(self, result: Any) -> None:
        _save(self.result_path, dataclasses.asdict(result))

    def load_result(self, cls: type) -> Any | None:
        """The finished run as a ``cls`` (:class:`~dream_plugin.harness.ab.arm.RunResult`), or None."""
        return cls(**_load(self.result_path)) if self.result_path.is_file() else None

    def resume_point(self) -> int | None:
        """The iteration a restart would continue from (None: from the start)."""
        state = self.load_state()
        return None if state is None else int(state["iteration"])
