"""Sub-batches of a padded batch of problems, and the small pools' Gram matrices.

The engine splits a batch into the problems clustered from their Gram matrix (small pools, see
:func:`~.seeding.small_pool`) and the others. In the common case - every problem of a batch in
one group at full length - the pieces are views, not copies of the batch.
"""

from __future__ import annotations

import torch

__all__ = ["SmallPoolGrams", "rows_of"]


class SmallPoolGrams:
    """``X X^T`` of the small problems (:func:`~.seeding.small_pool`), in one ``(S, N_g, N_g)`` tensor
    with ``N_g`` the largest of them (their padded rows are zero)."""

    def __init__(self, xf: torch.Tensor, lens: list[int], small: list[int]) -> None:
        self.small = small
        self.n_g = max((lens[b] for b in small), default=0)
        sub = rows_of(xf, small, self.n_g)
        self.gram = torch.bmm(sub, sub.transpose(1, 2)) if small else None
        self._pos = {b: j for j, b in enumerate(small)}

    def __contains__(self, b: int) -> bool:
        return b in self._pos

    def stack(self, ids: list[int], m: int) -> torch.Tensor:
        """The Gram matrices of the problems ``ids`` (all small) cut to ``m`` rows: ``(len(ids), m, m)``,
        a view when they are all the small problems at full size."""
        assert self.gram is not None
        if ids == self.small:
            return self.gram if m == self.n_g else self.gram[:, :m, :m]
        return self.gram[[self._pos[b] for b in ids], :m, :m]


def rows_of(t: torch.Tensor, ids: list[int], m: int) -> torch.Tensor:
    """``t[ids, :m]``: a view when ``ids`` are all the problems in order and ``m`` their full length."""
    if ids == list(range(t.shape[0])):
        return t if m == t.shape[1] else t[:, :m]
    return t[ids, :m]
