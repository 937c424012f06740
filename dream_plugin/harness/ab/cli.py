"""``dream-plugin ab``: the A/B benchmark subcommand (registered by :func:`add_ab_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dream_plugin.core.config import ConfigError, load_yaml
from dream_plugin.harness.ab.config import build_config, defaults_yaml
from dream_plugin.harness.ab.flags import FLAGS
from dream_plugin.harness.ab.names import ARM_DESCRIPTIONS, ARM_FORMS
from dream_plugin.harness.ab.presets import presets_text



def _dest(key: str) -> str:
    return "ab_" + key.replace(".", "__")


def add_ab_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``ab`` on the ``dream-plugin`` subparsers."""
    arms = "; ".join(f"{k}: {v}" for k, v in ARM_DESCRIPTIONS.items())
    p = sub.add_parser(
        "ab",
        help="A/B benchmark: distil with random vs DREAM selection (and ablations), same seeds",
        description="Distil a synthetic set with each arm (same loop, seeds and budget; only the selection "
        "differs), evaluate at several iterations, and report accuracy curves, speed-up and selection time. "
        f"Arms: {arms}. An arm can also be {ARM_FORMS}.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (see --show-defaults); flags override it")
    p.add_argument("--show-defaults", action="store_true",
                   help="print the default config (with --preset/--config/flags: the resolved one) as YAML and exit")
    p.add_argument("--preset", metavar="NAME", help="a named configuration (DREAM's paper setting; see --presets); "
                   "--config and flags override it")
    p.add_argument("--presets", action="store_true", help="list the presets, one line each, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="time one inner step and one evaluation epoch, print the estimated cost of the run and stop")
    p.add_argument("--quick", action="store_true",
                   help="small preset, a smoke test of the pipeline; measured on 2 idle CPU cores: dm about 60 s, "
                   "--method idc (4 outer iterations of 3 inner steps, 15 evaluation epochs) about 140 s")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run saved in DIR (its --out): finished "
                   "runs are kept, the others continue from their last evaluation point; options given with it "
                   "must not change the run's numbers")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier run's results.json and plots in --out (never mixed with the new ones)")
    for flag, key, kwargs in FLAGS:
        # the metavar follows the flag (--width WIDTH), not the internal destination name
        kwargs = {"metavar": flag[2:].upper().replace("-", "_"), **kwargs} if "choices" not in kwargs \
            and kwargs.get("action") is None else kwargs
        p.add_argument(flag, dest=_dest(key), default=None, **kwargs)
    p.set_defaults(func=cmd_ab)
    return p


def flags_to_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicitly given flags as a nested mapping of config keys."""
    out: dict[str, Any] = {}
    for _flag, key, _kw in FLAGS:
        value = getattr(args, _dest(key), None)
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if (key == "threads" and value == 0) else value
    if getattr(args, "no_progress", False):
        out["progress"] = False
    return out


def cmd_ab(args: argparse.Namespace) -> int:
    if args.presets:
        print(presets_text())
        return 0
    file_data = load_yaml(args.config) if args.config else None
    if args.show_defaults:
        resolved = args.preset or file_data or flags_to_overrides(args)
        cfg = build_config(file_data, flags_to_overrides(args), quick=args.quick, preset=args.preset,
                           validate=False) if resolved else None
        print(defaults_yaml(cfg, args.preset), end="")
        return 0
    if args.resume:
        from dream_plugin.harness.ab.resume import resume_config

        if args.force:
            raise ConfigError("--resume continues the run in its folder and --force starts over there; give one")
        if args.dry_run:
            raise ConfigError("--resume continues a run and --dry-run only estimates one; give one")
        out = getattr(args, _dest("out"))
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise ConfigError(f"--resume {args.resume!r} continues the run in that folder and writes its results there; "
                              f"--out {out!r} names another folder: drop --out")
        cfg = resume_config(args.resume, file_data, flags_to_overrides(args), quick=args.quick)
    else:
        cfg = build_config(file_data, flags_to_overrides(args), quick=args.quick, preset=args.preset)
    from dream_plugin.harness.ab.runner import run_ab

    try:
        run_ab(cfg, force=args.force, log=print, out=args.resume, resume=bool(args.resume), dry_run=args.dry_run)
    except ModuleNotFoundError as exc:
        if "adapters" in str(exc):
            raise ConfigError(f"the get_images adapter is not available: {exc}") from exc
        raise
    return 0
