"""``dream-plugin integrate PATH [--apply | --check | --list]``: recognise a host checkout, show or write the change."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

from dream_plugin.hosts.integrate.discover import Target, discover
from dream_plugin.hosts.integrate.family import DOC as FAMILY_DOC
from dream_plugin.hosts.integrate.patch import IntegrateError, apply_all, family_status, notes_for, plan, plan_family, status
from dream_plugin.hosts.integrate.recipes import RECIPES

__all__ = ["add_parser", "recognise", "run", "list_recipes"]


def recognise(root: Path) -> list[tuple[Any, Path, str]]:
    """Every host file in the checkout ``root`` (or the file ``root`` itself) a recipe takes: (recipe, path, text)."""
    targets, _ = discover(root)
    return [(t.recipe, t.path, t.text) for t in targets]


def list_recipes(out: Any) -> None:
    """The recipes, each with the files it looks for."""
    for r in RECIPES:
        print(f"{r.host:8} {r.file:14} {r.doc}", file=out)
    print(f"{'family':8} {'any *.py':14} {FAMILY_DOC} (a nested def get_images(c, n) over per-class index lists, "
          "in files no named recipe takes)", file=out)


def _state(t: Target) -> str:
    return family_status(t.family) if t.family is not None else status(t.recipe, t.text)


def run(root: Path, *, mode: str = "diff", out: Any = None, err: Any = None, net: str | None = None,
        net_factory: str | None = None, family_only: bool = False) -> int:
    """0: done (diff shown / applied / integrated); 1: --check found a file not integrated; 2: error."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not root.exists():
        print(f"dream-plugin integrate: {root}: no such file or directory", file=err)
        return 2
    targets, problems = discover(root, net=net, factory=net_factory, family_only=family_only,
                                  resolve=mode != "check")
    if not targets and not problems:
        known = ", ".join(f"{r.host} ({r.file})" for r in RECIPES)
        print(f"dream-plugin integrate: {root}: no supported host file recognised; known: {known}, and any file "
              "with a nested def get_images(c, n) over per-class index lists (see --list)", file=err)
        return 2
    base = root if root.is_dir() else root.parent
    if mode == "check":
        worst = 0
        for t in targets:
            state = _state(t)
            print(f"{t.path}: {t.recipe.host}: {state}", file=out)
            worst = max(worst, 0 if state.startswith("integrated") else 1)
        for problem in problems:
            print(f"{problem}", file=out)
        return 1 if problems else worst
    if problems:  # nothing is written unless every file a recipe knows can be changed
        for problem in problems:
            print(f"dream-plugin integrate: refused: {problem}", file=err)
        return 2
    try:
        plans = [plan_family(t.path, t.rel, t.text, t.family) if t.family is not None else plan(t.recipe, t.path, t.text)
                 for t in targets]
    except IntegrateError as exc:
        print(f"dream-plugin integrate: refused: {exc}", file=err)
        return 2
    if mode == "apply":
        try:
            backups = {p.path: b for p, b in apply_all(plans)}
        except IntegrateError as exc:
            print(f"dream-plugin integrate: {exc}", file=err)
            return 2
    warned: set[str] = set()
    for t, p in zip(targets, plans):
        if not p.changed:
            state = _state(t)
            how = "already integrated" if state == "integrated" else f"already {state}"
            print(f"{p.path}: {p.recipe.host}: {how}, nothing to do", file=out)
        elif mode == "apply":
            print(f"{p.path}: {p.recipe.host}: integrated (backup: {backups[p.path]})", file=out)
        else:
            out.write(p.diff(base))
        for note in _family_notes(t) + notes_for(p.recipe, base):
            if note not in warned:
                warned.add(note)
                print(f"warning: {note}", file=err)
    if mode == "diff" and any(p.changed for p in plans):
        print("(nothing written; run again with --apply to write this change)", file=err)
    return 0


def _family_notes(t: Target) -> list[str]:
    """What the generic recipe did not do by itself: unclassified call sites, with what to write."""
    if t.family is None or _state(t) != "not integrated":
        return []
    return [f"{t.rel}:{s.line}: {s.advice()}" for s in t.family.unclassified]


def _cmd(args: argparse.Namespace) -> int:
    if args.list:
        list_recipes(sys.stdout)
        return 0
    if args.path is None:
        print("dream-plugin integrate: PATH is missing; give a host checkout (folder) or one host file, "
              "or --list for the recipes", file=sys.stderr)
        return 2
    if args.net is not None and not args.net.isidentifier():
        print(f"dream-plugin integrate: --net: {args.net!r} is not a Python name; expected the variable holding "
              "the live network (e.g. net)", file=sys.stderr)
        return 2
    if args.net_factory is not None:
        try:
            ast.parse(args.net_factory, mode="eval")
        except SyntaxError:
            print(f"dream-plugin integrate: --net-factory: {args.net_factory!r} is not a Python expression; expected "
                  "one that builds a fresh network, e.g. 'get_network(args.model, channel, num_classes, im_size)'",
                  file=sys.stderr)
            return 2
    mode = "apply" if args.apply else "check" if args.check else "diff"
    return run(Path(args.path), mode=mode, net=args.net, net_factory=args.net_factory, family_only=args.family)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "integrate",
        help="recognise a host checkout (DC/DSA, DM, MTT, IDC, official DREAM, any DC-family file) and show or "
        "write the adapter change",
        description="Prints a unified diff of the change for every supported host file in PATH, and the host's "
        "torch-2 / CPU issues as warnings with file:line. A file no named recipe takes but with a nested "
        "def get_images(c, n) over per-class index lists gets the generic family change. --apply writes it "
        "(backup *.dream-plugin.orig; all files or none); --check exits 0 when every recognised file is "
        "integrated, 1 otherwise.",
    )
    p.add_argument("path", nargs="?", help="a host checkout (folder) or one host file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--apply", action="store_true", help="write the change (keeps a backup; idempotent)")
    g.add_argument("--check", action="store_true", help="say whether the checkout is integrated (exit 1 if not)")
    g.add_argument("--list", action="store_true", help="list the recipes and the files each looks for")
    p.add_argument("--net", metavar="NAME", help="family files: the variable holding the live network")
    p.add_argument("--net-factory", metavar="EXPR",
                   help="family files: an expression building a fresh network (for initialisation)")
    p.add_argument("--family", action="store_true",
                   help="use only the generic family recipe (for a file named like a known host's but not one)")
    p.set_defaults(func=_cmd)
