"""Uniform sampling without replacement inside the class pool, as the host codebases do."""

from __future__ import annotations

import torch

from dream_plugin.core.requests import SelectionRequest, SelectionResult
from dream_plugin.strategies.base import Strategy


class RandomStrategy(Strategy):
    """The hosts' baseline: n distinct pool items drawn uniformly with the request's generator."""

    name = "random"
    description = "uniform sampling without replacement (the host codebases' behaviour)"

    def select(self, request: SelectionRequest) -> SelectionResult:
        perm = torch.randperm(request.pool_size, generator=request.generator)
        return SelectionResult(positions=perm[: request.n].clone())
