"""What one evaluation-network training step costs, and what the ways to batch it measured.

The evaluation of a synthetic set (fresh ConvNets trained on it) is most of an A/B run's time on a
CPU. This times one SGD step (forward, backward, update) of the harness's ConvNet (width 32,
depth 3, instance norm, 28x28x1, batch 128, 1 thread) done as the harness does it, one network at a
time, and as the batched alternatives: K networks as one grouped-convolution model, K networks
through torch.func.vmap, and torch.compile of one network (compilation timed apart).

Usage: python -m benchmarks.eval_step [--nets 2] [--steps 20] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from dream_plugin.harness.models import ConvNet


def _timed(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


class Stacked(nn.Module):
    """K ConvNets as one model: grouped convolutions, per-channel norm, a batched classifier."""

    def __init__(self, nets: list[ConvNet]) -> None:
        super().__init__()
        convs = [[m for m in n.features if isinstance(m, nn.Conv2d)] for n in nets]
        norms = [[m for m in n.features if isinstance(m, nn.GroupNorm)] for n in nets]
        depth = len(convs[0])
        self.w = nn.ParameterList([nn.Parameter(torch.cat([c[i].weight.data for c in convs])) for i in range(depth)])
        self.b = nn.ParameterList([nn.Parameter(torch.cat([c[i].bias.data for c in convs])) for i in range(depth)])
        self.gw = nn.ParameterList([nn.Parameter(torch.cat([c[i].weight.data for c in norms])) for i in range(depth)])
        self.gb = nn.ParameterList([nn.Parameter(torch.cat([c[i].bias.data for c in norms])) for i in range(depth)])
        self.lw = nn.Parameter(torch.stack([n.classifier.weight.data for n in nets]))
        self.lb = nn.Parameter(torch.stack([n.classifier.bias.data for n in nets]))

    def forward(self, xs: torch.Tensor) -> torch.Tensor:  # (K, N, C, H, W) -> (K, N, classes)
        k, n = xs.shape[:2]
        h = xs.permute(1, 0, 2, 3, 4).reshape(n, k * xs.shape[2], *xs.shape[3:])
        for i in range(len(self.w)):
            h = F.avg_pool2d(F.relu(F.group_norm(F.conv2d(h, self.w[i], self.b[i], padding=1, groups=k),
                                                 self.w[i].shape[0], self.gw[i], self.gb[i])), 2)
        h = h.reshape(n, k, -1).permute(1, 0, 2)
        return torch.baddbmm(self.lb.unsqueeze(1), h, self.lw.transpose(1, 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (needs a C++ compiler)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.nets, 128, 1, 28, 28, generator=g), torch.randint(0, 10, (args.nets, 128), generator=g)
    torch.manual_seed(0)
    nets = [ConvNet(1, 10, 28, width=32, depth=3) for _ in range(args.nets)]

    def sgd(params):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    opts = [sgd(n.parameters()) for n in nets]

    def one_at_a_time() -> None:
        for k, (net, opt) in enumerate(zip(nets, opts)):
            opt.zero_grad()
            F.cross_entropy(net(x[k]), y[k]).backward()
            opt.step()

    stacked = Stacked(copy.deepcopy(nets))
    sopt = sgd(stacked.parameters())

    def grouped() -> None:
        sopt.zero_grad()
        F.cross_entropy(stacked(x).flatten(0, 1), y.flatten(), reduction="sum").div(128).backward()
        sopt.step()

    from torch.func import functional_call, grad, stack_module_state, vmap

    params, buffers = stack_module_state(copy.deepcopy(nets))
    base = copy.deepcopy(nets[0]).to("meta")
    per_net_grad = vmap(grad(lambda p, b, xb, yb: F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)))

    def vmapped() -> None:
        per_net_grad(params, buffers, x, y)  # gradients only: the update would come on top

    rows = [("one network at a time (the harness)", _timed(one_at_a_time, args.steps)),
            (f"{args.nets} networks as one grouped-convolution model", _timed(grouped, args.steps)),
            (f"{args.nets} networks through torch.func.vmap (gradients only)", _timed(vmapped, args.steps))]
    if args.compile:
        compiled = [torch.compile(n) for n in nets]
        start = time.perf_counter()

        def compiled_step() -> None:
            for k, (net, opt) in enumerate(zip(compiled, opts)):
                opt.zero_grad()
                F.cross_entropy(net(x[k]), y[k]).backward()
                opt.step()

        compiled_step()
        rows.append((f"torch.compile, one network at a time (compiling took {time.perf_counter() - start:.0f} s)",
                     _timed(compiled_step, args.steps)))
    print(f"one SGD step of {args.nets} evaluation networks (ConvNet width 32 depth 3, 28x28, batch 128, 1 thread):")
    for name, ms in rows:
        print(f"  {ms:8.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
