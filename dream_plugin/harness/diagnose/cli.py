"""``dream-plugin diagnose``: the subcommand (registered by :func:`add_diagnose_parser`)."""

from __future__ import annotations

import argparse
from typing import Any

from dream_plugin.harness.ab.distances import GRADIENT_METRICS
from dream_plugin.harness.diagnose.config import EMBED_INPUTS, STRATEGIES, DiagnoseConfig


def add_diagnose_parser(sub: Any) -> argparse.ArgumentParser:
    d = DiagnoseConfig()
    p = sub.add_parser(
        "diagnose",
        help="how well each strategy's batch gradient stands for the whole class (no distillation)",
        description="For each network, class, strategy and batch size: the loss gradient on the selected batch "
        "vs the gradient on the whole class pool (cosine, relative error, the l1 / mse / dc matching distances), "
        "each strategy's distance by --metric against random draws' (negative 'vs random': closer than random; "
        "this describes the batches and does not forecast an A/B result, docs/findings.md), and the per-sample loss and gradient-norm distributions of the "
        "picks. Writes diagnose.json and diagnose.png.",
    )
    p.add_argument("--dataset", default=d.dataset, help="mnist (embedded subset) | digits | folder | torchvision:<Name>")
    p.add_argument("--root", default=None, help="folder holding the dataset (folder, torchvision:<Name>)")
    p.add_argument("--networks", nargs="+", default=list(d.networks), metavar="NET",
                   help="fresh | trained:K (K SGD steps on real data) | factory:module:function | checkpoint:PATH "
                        f"(default: {' '.join(d.networks)})")
    p.add_argument("--strategies", nargs="+", default=list(d.strategies), metavar="NAME",
                   help=f"among {', '.join(STRATEGIES)}")
    p.add_argument("--sizes", nargs="+", type=int, default=list(d.sizes), metavar="N",
                   help="batch sizes, each at most the smallest class's number of training images")
    p.add_argument("--draws", type=int, default=d.draws, help="random batches per class and size")
    p.add_argument("--subsample", type=int, default=d.subsample, help="DREAM+ s (dream+ strategy)")
    p.add_argument("--width", type=int, default=d.width, help="ConvNet width (fresh, trained, checkpoint)")
    p.add_argument("--depth", type=int, default=d.depth, help="ConvNet depth")
    p.add_argument("--metric", choices=GRADIENT_METRICS, default=d.metric,
                   help="the matching distance to compare strategies by (l1, mse: IDC's; dc: DC/DSA's 1 - cosine)")
    p.add_argument("--embed-input", choices=EMBED_INPUTS, default=d.embed_input,
                   help="what DREAM's embedding sees: normalized images (default) or raw [0, 1] pixels, as the "
                        "official DREAM code embeds")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:<i>")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default dream-diagnose-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_diagnose)
    return p


def cmd_diagnose(args: argparse.Namespace) -> int:
    from dream_plugin.harness.diagnose.run import run_diagnose

    cfg = DiagnoseConfig(dataset=args.dataset, root=args.root, networks=tuple(args.networks),
                         strategies=tuple(args.strategies), sizes=tuple(args.sizes), draws=args.draws,
                         subsample=args.subsample, width=args.width, depth=args.depth, metric=args.metric,
                         embed_input=args.embed_input,
                         seed=args.seed, device=args.device).validate()
    results = run_diagnose(cfg, out=args.out, say=print, progress=not args.no_progress)
    print()
    print(results["table"])
    print(f"\nwrote {results['out']}/diagnose.json, diagnose.png (total {results['total_seconds']:.1f} s)")
    return 0
