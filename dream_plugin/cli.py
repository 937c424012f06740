"""The ``dream-plugin`` command: the A/B run, plugins, configs, precompute, data export and a demo."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import yaml

from .config import ConfigError, Settings, load_settings, load_yaml, parse_settings
from .manager import PluginError, build_plugin_manager, collect_strategies
from .ab.cli import add_ab_parser
from .export import add_export_parser
from .precompute import add_precompute_parser
from .records_cli import add_records_parser
from .integrate.cli import add_integrate_parser


def _cmd_plugins(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else load_settings()
    pm = build_plugin_manager(settings.plugins)
    strategies = collect_strategies(pm)
    width = max(len(n) for n in strategies)
    print(f"{'strategy':<{width}}  {'plugin':<22} {'distribution':<22} description")
    for name in sorted(strategies):
        s = strategies[name]
        print(f"{name:<{width}}  {s.plugin:<22} {s.distribution:<22} {s.description}")
    others = [n for n, _ in pm.list_name_plugin() if n and n != "dream_plugin.builtin"]
    if others:
        print("\nthird-party plugins loaded: " + ", ".join(sorted(others)))
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from .selector import Selector

    settings = parse_settings(load_yaml(args.file))
    Selector(settings)  # validates strategy names and per-strategy options against the registry
    print(f"{args.file}: OK (strategy={settings.strategy}, init={settings.init_strategy}, bn_batch={settings.bn_batch})")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from .selector import Selector

    settings = load_settings(args.file) if args.file else Settings()
    sel = Selector(settings)
    data = settings.to_dict()
    for name in sorted(sel.strategies):
        opts = sel._options(name)
        if opts is not None:
            import dataclasses

            data["options"][name] = dataclasses.asdict(opts)
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    rows = run_demo(dataset=args.dataset, n=args.n, seed=args.seed)
    print(f"Selection demo on the embedded {args.dataset} data, {args.n} picks per class, fresh ConvNet (seed {args.seed}).")
    print("coverage: mean squared distance from each image to its nearest pick in the network's embedding space")
    print(format_table(rows))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dream-plugin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list the selection strategies and where each comes from")
    p.add_argument("--config", help="YAML config (its plugins.block and autoload apply)")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("config", help="check or show configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a YAML config file")
    c.add_argument("file")
    c.set_defaults(func=_cmd_config_check)
    c = csub.add_parser("show", help="print the resolved configuration (defaults if no file)")
    c.add_argument("file", nargs="?")
    c.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("demo", help="random vs DREAM picks on the embedded MNIST subset")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    p.add_argument("--n", type=int, default=10, help="picks per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.set_defaults(func=_cmd_demo)
    add_ab_parser(sub)
    add_precompute_parser(sub)
    add_export_parser(sub)
    add_records_parser(sub)
    add_integrate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, PluginError, FileNotFoundError, ValueError) as exc:
        print(f"dream-plugin: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
