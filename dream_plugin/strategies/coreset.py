"""Coreset baselines on the same embeddings as DREAM, for ablations: herding and greedy k-center."""

from __future__ import annotations

import time

import torch

from dream_plugin.core.requests import SelectionRequest, SelectionResult
from dream_plugin.strategies.base import EmbeddingStrategy


def herding_order(feats: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy herding: each step adds the item that brings the running mean closest to the class mean."""
    x = feats.float()
    target = x.mean(dim=0)
    running = torch.zeros_like(target)
    available = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    picks = []
    for t in range(n):
        candidate_means = (running.unsqueeze(0) + x) / (t + 1)
        dist = (candidate_means - target).pow(2).sum(dim=1)
        dist = dist.masked_fill(~available, float("inf"))
        i = int(torch.argmin(dist))
        picks.append(i)
        available[i] = False
        running = running + x[i]
    return torch.tensor(picks, dtype=torch.int64)


def kcenter_order(feats: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy k-center: start at the item nearest the class mean, then the farthest from those chosen."""
    x = feats.float()
    sq = x.pow(2).sum(dim=1)
    first = int(torch.argmin((x - x.mean(dim=0)).pow(2).sum(dim=1)))
    picks = [first]
    min_dist = (sq - 2 * x @ x[first] + sq[first]).clamp_min(0)
    min_dist[first] = -1.0
    for _ in range(n - 1):
        i = int(torch.argmax(min_dist))
        picks.append(i)
        d = (sq - 2 * x @ x[i] + sq[i]).clamp_min(0)
        min_dist = torch.minimum(min_dist, d)
        min_dist[torch.tensor(picks, device=x.device)] = -1.0
    return torch.tensor(picks, dtype=torch.int64)


class _OrderStrategy(EmbeddingStrategy):
    """Embed the pool, then take the first n of a deterministic greedy order."""

    @staticmethod
    def order(feats: torch.Tensor, n: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, request: SelectionRequest) -> SelectionResult:
        feats, embed_seconds = self.embed_pool(request)
        start = time.perf_counter()
        positions = self.order(feats, request.n)
        return SelectionResult(
            positions=positions,
            reclustered=True,
            embed_seconds=embed_seconds,
            cluster_seconds=time.perf_counter() - start,
        )


class HerdingStrategy(_OrderStrategy):
    name = "herding"
    description = "herding (running mean tracks the class mean) on the live embeddings"
    order = staticmethod(herding_order)


class KCenterStrategy(_OrderStrategy):
    name = "kcenter"
    description = "greedy k-center (farthest-first) on the live embeddings"
    order = staticmethod(kcenter_order)
