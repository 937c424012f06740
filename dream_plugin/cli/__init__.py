"""The dream-plugin command: the A/B run, plugins, configs, precompute, data export and a demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import yaml

from dream_plugin import __version__
from dream_plugin.core.config import (ENV_CONFIG, ENV_DISABLE_AUTOLOAD, ENV_INIT_STRATEGY, ENV_SEED, ENV_STRATEGY, ConfigError,
                     load_settings, load_yaml, parse_settings)
from dream_plugin.common.extras import MissingExtraError, missing_extra_message
from dream_plugin.core.manager import PluginError, build_plugin_manager, collect_strategies
from dream_plugin.harness.ab.cli import add_ab_parser
from dream_plugin.harness.diagnose.cli import add_diagnose_parser
from dream_plugin.harness.ab.output import OutputError, RunInterrupted
from dream_plugin.cli.export import add_export_parser
from dream_plugin.cli.precompute import add_precompute_parser
from dream_plugin.cli.records import add_records_parser
from dream_plugin.hosts.integrate.cli import add_integrate_parser


def _cmd_plugins(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else load_settings()
    pm = build_plugin_manager(settings.plugins)
    strategies = collect_strategies(pm)
    width = max(len(n) for n in strategies)
    print(f"{'strategy':<{width}}  {'plugin':<22} {'distribution':<22} description")
    for name in sorted(strategies):
        s = strategies[name]
        print(f"{name:<{width}}  {s.plugin:<22} {s.distribution:<22} {s.description}")
    # a blocked name stays in pluggy's registry with no plugin object: it is blocked, not loaded
    others = [n for n, p in pm.list_name_plugin() if n and p is not None and n != "dream_plugin.builtin"]
    blocked = [n for n, p in pm.list_name_plugin() if n and p is None]
    if others:
        print("\nthird-party plugins loaded: " + ", ".join(sorted(others)))
    if blocked:
        print("blocked by config (plugins.block), not loaded: " + ", ".join(sorted(blocked)))
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from dream_plugin.core.selector import Selector

    settings = parse_settings(load_yaml(args.file))
    Selector(settings)  # validates strategy names and per-strategy options against the registry
    print(f"{args.file}: OK (strategy={settings.strategy}, init={settings.init_strategy}, bn_batch={settings.bn_batch})")
    return 0


def _config_sources(file: str | None) -> list[str]:
    """Where the resolved settings come from, lowest precedence first (for ``config show``)."""
    sources = ["defaults"]
    path = file or os.environ.get(ENV_CONFIG) or None
    if path:
        sources.append(f"file {path}" + ("" if file else f" (from {ENV_CONFIG})"))
    for name in (ENV_STRATEGY, ENV_INIT_STRATEGY, ENV_SEED, ENV_DISABLE_AUTOLOAD):
        if os.environ.get(name):
            sources.append(f"{name}={os.environ[name]}")
    return sources


def _cmd_config_show(args: argparse.Namespace) -> int:
    from dream_plugin.core.selector import Selector

    settings = load_settings(args.file)  # defaults < file (or $DREAM_PLUGIN_CONFIG) < environment
    try:
        sel = Selector(settings)  # unknown strategies (e.g. from DREAM_STRATEGY) and bad options fail here
    except ConfigError as exc:
        for key, env in (("strategy", ENV_STRATEGY), ("init.strategy", ENV_INIT_STRATEGY)):
            if str(exc).startswith(f"{key}: ") and os.environ.get(env):
                raise ConfigError(f"{env}={os.environ[env]}: {exc}") from None
        raise
    data = settings.to_dict()
    for name in sorted(sel.strategies):
        opts = sel._options(name)
        if opts is not None:
            import dataclasses

            data["options"][name] = dataclasses.asdict(opts)
    print("# resolved from: " + " < ".join(_config_sources(args.file)))
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dream_plugin.harness.demo import format_table, run_demo

    print(f"Selection demo on the embedded {args.dataset} data, {args.n} picks per class, fresh ConvNet (seed {args.seed}).")
    print("coverage: mean squared distance from each image to its nearest pick in the network's embedding space",
          flush=True)
    rows = run_demo(dataset=args.dataset, n=args.n, seed=args.seed, progress=not args.no_progress)
    print(format_table(rows))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dream-plugin", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dream-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list the selection strategies and where each comes from")
    p.add_argument("--config", help="YAML config (its plugins.block and autoload apply)")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("config", help="check or show configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a YAML config file")
    c.add_argument("file")
    c.set_defaults(func=_cmd_config_check)
    c = csub.add_parser("show", help="print the resolved configuration: defaults < file < environment",
                        description="Print the configuration a Selector would use here: the defaults, then the "
                        f"file (FILE, else ${ENV_CONFIG}), then the environment ({ENV_STRATEGY}, "
                        f"{ENV_INIT_STRATEGY}, {ENV_SEED}, {ENV_DISABLE_AUTOLOAD}); fails on an unknown strategy.")
    c.add_argument("file", nargs="?", metavar="FILE")
    c.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("demo", help="random vs DREAM picks on the embedded MNIST subset")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    p.add_argument("--n", type=int, default=10, help="picks per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)
    add_ab_parser(sub)
    add_diagnose_parser(sub)
    add_precompute_parser(sub)
    add_export_parser(sub)
    add_records_parser(sub)
    add_integrate_parser(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """The reader went away (``dream-plugin plugins | head``): stop quietly, as Unix tools do.

    stdout is pointed at /dev/null so the interpreter's final flush does not complain again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout without a file descriptor
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a writer stopped by a closed pipe


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except RunInterrupted as exc:  # the run saved what it had and says how to continue
        print(f"dream-plugin: {exc}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except KeyboardInterrupt:
        print(f"dream-plugin: interrupted ({args.command}); nothing of it was saved", file=sys.stderr)
        return 130
    except (ConfigError, PluginError, MissingExtraError, OutputError, FileNotFoundError, ValueError) as exc:
        print(f"dream-plugin: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        hint = missing_extra_message(exc.name or "", f"dream-plugin {args.command}")
        if hint is None:
            raise
        print(f"dream-plugin: error: {hint}", file=sys.stderr)
        return 2

