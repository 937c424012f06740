"""Precomputed DREAM picks: embed a dataset once, cluster every class, write the picks to a file.

This module is the ``dream-plugin precompute`` command: its arguments, the network it embeds
with, and the summary it prints.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dream_plugin.core.boundary import check_device
from dream_plugin.engine.clustering.backends import BACKEND_NAMES
from dream_plugin.engine.clustering.seeding import SEEDING_METHODS
from dream_plugin.common.paths import check_writable_file
from dream_plugin.strategies.dream import KMeansOptions
from dream_plugin.engine.precompute.sources import precompute_dataset, precompute_from_features, synthetic_features


def _parse_synthetic(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"--synthetic: {text!r} is not allowed; expected N_CLASSES,PER_CLASS,DIM (positive integers, e.g. 100,2000,512)"
        )
    return parts  # type: ignore[return-value]


def _load_factory(spec: str) -> Callable[..., Any]:
    if spec.count(":") != 1:
        raise ValueError(f"--factory: {spec!r} is not allowed; expected module:function (e.g. mypkg.nets:make_net)")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"--factory: cannot import module {mod_name!r}: {exc}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--factory: module {mod_name!r} has no callable {fn_name!r}")
    return fn


def build_network(args: argparse.Namespace, channels: int, num_classes: int, image_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a ``precompute`` command: a factory's or our ConvNet, optionally with a checkpoint."""
    from dream_plugin.harness.models import ConvNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.factory:
            fn = _load_factory(args.factory)
            shape = {"channels": channels, "num_classes": num_classes, "image_size": image_size}
            try:
                params = inspect.signature(fn).parameters
                kw = {k: v for k, v in shape.items() if k in params}
            except (TypeError, ValueError):
                kw = {}
            net = fn(**kw)
            if not isinstance(net, nn.Module):
                raise ValueError(f"--factory {args.factory} returned {type(net).__name__}; expected a torch.nn.Module")
            desc = {"network": f"factory {args.factory}"}
        else:
            net = ConvNet(channels, num_classes, image_size, width=args.width, depth=args.depth, norm=args.norm)
            desc = {"network": f"ConvNet(width={args.width}, depth={args.depth}, norm={args.norm})"}
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint: {args.checkpoint!r} does not exist")
        try:
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - garbage, truncated or pickled-object files alike
            raise ValueError(f"--checkpoint: {args.checkpoint!r} is not a checkpoint torch.load can read "
                             f"({_load_failure(exc)}); expected a file saved with torch.save(state_dict)") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"--checkpoint: {args.checkpoint!r} holds {type(state).__name__}; expected a state_dict")
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"--checkpoint {args.checkpoint!r} does not fit {desc['network']} for {channels}x{image_size}x{image_size} "
                f"inputs and {num_classes} classes (pass the --width/--depth/--norm it was trained with, or --factory): {exc}"
            ) from None
        desc["checkpoint"] = str(args.checkpoint)
    else:
        desc["seed"] = args.seed
    return net.eval(), desc


def _load_failure(exc: Exception) -> str:
    """The gist of a torch.load failure in a few words (its messages run to paragraphs)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:  # weights_only refusals: the reason follows this marker; the rest is advice
        text = text.split(marker, 1)[1]
    first = (text.strip().splitlines() or [""])[0].strip().split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


def _cmd_precompute(args: argparse.Namespace) -> int:
    try:
        return _precompute(args)
    except KeyboardInterrupt:
        from dream_plugin.harness.ab.output import RunInterrupted
        from dream_plugin.engine.precompute.job import partial_dir

        raise RunInterrupted(f"interrupted: the classes finished so far are kept in {str(partial_dir(args.out))!r}; "
                             "rerun the same command to resume from them") from None


def _precompute(args: argparse.Namespace) -> int:
    check_writable_file(args.out, "--out")
    if not args.synthetic:
        check_device(args.device, "--device", advice="use --device cpu")  # before any data is loaded
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: {args.threads} is not allowed; expected an integer >= 1")
        torch.set_num_threads(args.threads)
    km = KMeansOptions(max_iter=args.max_iter, tol=args.tol, backend=args.backend, seeding=args.seeding,
                       n_local_trials=args.n_local_trials)
    common = dict(seed=args.kmeans_seed, kmeans=km, save_centroids=not args.no_centroids, restart=args.restart,
                  progress=not args.no_progress)
    if args.synthetic and args.dataset:
        raise ValueError("give either --dataset or --synthetic, not both")
    if args.synthetic:
        c, per, dim = args.synthetic
        features_of, sizes = synthetic_features(c, per, dim, seed=args.seed)
        what = f"synthetic {c} classes x {per} x {dim}-d features"
        report = precompute_from_features(features_of, args.k, args.out, pool_sizes=sizes,
                                          source={"synthetic": [c, per, dim], "seed": args.seed}, **common)
    else:
        from dream_plugin.harness.data import load_dataset

        ds = load_dataset(args.dataset or "mnist", args.root)
        net, desc = build_network(args, ds.channels, ds.num_classes, ds.image_size)
        net = net.to(args.device)
        what = f"{ds.name}: {ds.train_labels.numel()} training images, {ds.num_classes} classes, {desc['network']}"
        report = precompute_dataset(ds, net, args.k, args.out, batch_size=args.batch_size, device=args.device,
                                    source=desc, **common)
    for line in report.discarded:
        print(f"dream-plugin: warning: discarded {line}", file=sys.stderr)
    print(f"{report.path}: picks for K={','.join(map(str, sorted(set(args.k))))} of {report.num_classes} classes "
          f"({what}); feature dim {report.feature_dim}")
    print(f"computed {len(report.computed)} classes, reused {len(report.reused)} from an interrupted run; "
          f"wall {report.seconds:.1f} s, peak RSS {report.peak_rss_mib:.0f} MiB (ru_maxrss, whole process)")
    return 0


def add_precompute_parser(sub: Any) -> None:
    """Register ``dream-plugin precompute`` on the CLI's subparsers."""
    p = sub.add_parser("precompute", help="embed a dataset once, cluster every class, write DREAM picks to a file",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the picks file to write (e.g. picks.pt)")
    p.add_argument("--k", type=int, action="append", required=True, help="K (picks per class); repeat: --k 10 --k 50")
    src = p.add_argument_group("data")
    src.add_argument("--dataset", help="mnist | digits | folder | torchvision:<Name> (default mnist)")
    src.add_argument("--root", help="folder holding the data (folder, torchvision:<Name>)")
    src.add_argument("--synthetic", type=_parse_synthetic, metavar="N_CLASSES,PER_CLASS,DIM",
                     help="synthetic features instead of a dataset and network (scale measurements)")
    net = p.add_argument_group("network (ignored with --synthetic)")
    net.add_argument("--checkpoint", help="a state_dict for the network (ConvNet, or --factory's)")
    net.add_argument("--factory", metavar="MODULE:FUNCTION", help="returns an nn.Module (called with channels, "
                     "num_classes, image_size where it accepts them)")
    net.add_argument("--width", type=int, default=128)
    net.add_argument("--depth", type=int, default=3)
    net.add_argument("--norm", default="instancenorm", choices=["instancenorm", "batchnorm", "none"])
    net.add_argument("--seed", type=int, default=0, help="seed of a fresh network (and of --synthetic data)")
    net.add_argument("--batch-size", type=int, default=256)
    net.add_argument("--device", default="cpu")
    km = p.add_argument_group("k-means")
    km.add_argument("--max-iter", type=int, default=100)
    km.add_argument("--tol", type=float, default=1e-4)
    km.add_argument("--backend", default="torch", choices=list(BACKEND_NAMES))
    km.add_argument("--seeding", default=None, choices=list(SEEDING_METHODS),
                    help="how k-means++ gets its distances (torch backend; default blocked; see docs/speed.md, \"Seeding\")")
    km.add_argument("--n-local-trials", type=int, default=None,
                    help="k-means++ candidates per step (torch backend; default 2 + ln K, 1 = classic k-means++)")
    km.add_argument("--kmeans-seed", type=int, default=0)
    p.add_argument("--no-centroids", action="store_true", help="do not store the centroids (smaller file)")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run of a different job")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy, shared CPU)")
    p.set_defaults(func=_cmd_precompute)
