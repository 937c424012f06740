"""``precomputed``: answer selections from a picks file written by ``dream-plugin precompute``.

Config: ``strategy: precomputed`` and ``options: {precomputed: {path: picks.pt}}``. The request's
``n`` must be one of the file's K values (else an error listing them, or the ``on_missing``
fallback); the request's pool must be the class pool the file was computed on (its size is
checked; its order must be that of ``ImageDataset.class_indices()``, ascending dataset index).
The picks are fixed: they do not follow the live network (see docs/scale.md for when that is
the right trade).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dream_plugin.core.config import ConfigError
from dream_plugin.core.requests import SelectionRequest, SelectionResult
from dream_plugin.strategies.base import Strategy


@dataclass(frozen=True)
class PrecomputedOptions:
    """Options of the ``precomputed`` strategy (config section ``options.precomputed``)."""

    path: str | None = None
    """The picks file (``dream-plugin precompute --out ...``); required."""
    on_missing: Literal["error", "random", "dream"] = "error"
    """When the file has no picks for the requested n (K): raise, or fall back to random / live dream."""
    num_items: int | None = None
    """If set, the dataset size the file must have been computed for (checked when it is loaded)."""
    num_classes: int | None = None
    """If set, the number of classes the file must cover."""

    def __post_init__(self) -> None:
        if self.path is not None and not self.path.strip():
            raise ConfigError(f"path: {self.path!r} is not allowed; expected the path of a picks file")
        for key in ("num_items", "num_classes"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"{key}: {v!r} is not allowed; expected an integer >= 1 or null")


class PrecomputedStrategy(Strategy):
    """Fixed picks from a precomputed file (one k-means per class and K, done offline)."""

    name = "precomputed"
    description = "picks read from a file written by `dream-plugin precompute` (fixed network, no re-embedding)"
    Options = PrecomputedOptions

    def __init__(self, options: PrecomputedOptions | None = None) -> None:
        super().__init__(options)
        self._file = None
        self._fallback = None

    def reset(self) -> None:
        if self._fallback is not None:
            self._fallback.reset()

    @property
    def picks_file(self):
        """The loaded, validated :class:`~dream_plugin.engine.precompute.picks.PicksFile` (loaded on first use)."""
        if self._file is None:
            from dream_plugin.engine.precompute.picks import load_picks

            opts: PrecomputedOptions = self.options
            if opts.path is None:
                raise ConfigError(
                    "options.precomputed.path: missing; strategy 'precomputed' needs the picks file written by "
                    "`dream-plugin precompute --out PATH`"
                )
            self._file = load_picks(opts.path, num_items=opts.num_items, num_classes=opts.num_classes)
        return self._file

    def select(self, request: SelectionRequest) -> SelectionResult:
        f = self.picks_file
        opts: PrecomputedOptions = self.options
        if request.n not in f.picks and opts.on_missing != "error":
            return self._fall_back(request, f.ks)
        positions = f.positions(request.class_id, request.n, request.pool_size)
        return SelectionResult(positions=positions, reclustered=False, extra={"source": f.path, "k": request.n})

    def _fall_back(self, request: SelectionRequest, ks: tuple[int, ...]) -> SelectionResult:
        opts: PrecomputedOptions = self.options
        if self._fallback is None:
            if opts.on_missing == "dream":
                from dream_plugin.strategies.dream import DreamStrategy

                self._fallback = DreamStrategy()
            else:
                from dream_plugin.strategies.random import RandomStrategy

                self._fallback = RandomStrategy()
        result = self._fallback.select(request)
        result.extra["fallback"] = f"{opts.on_missing}: K={request.n} not in {list(ks)}"
        return result
