"""``dream-plugin integrate PATH [--apply | --check]``: recognise a host checkout, show or write the change."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from .patch import IntegrateError, apply_plan, notes_for, plan, status
from .recipes import BEGIN, RECIPES, Recipe

__all__ = ["add_parser", "recognise", "run"]


def recognise(root: Path) -> list[tuple[Recipe, Path, str]]:
    """Every supported host file in the checkout ``root`` (or the file ``root`` itself), with its text."""
    found = []
    for recipe in RECIPES:
        path = root if root.is_file() else root / recipe.file
        if not path.is_file() or path.name != Path(recipe.file).name:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        marked = f"{BEGIN} ({recipe.host}" in text  # integrated already: its call sites read differently now
        if marked or (all(re.search(p, text, flags=re.M) for p in recipe.recognise) and not any(
            re.search(p, text, flags=re.M) for p in recipe.reject
        )):
            found.append((recipe, path, text))
    return found


def run(root: Path, *, mode: str = "diff", out: Any = None, err: Any = None) -> int:
    """0: done (diff shown / applied / integrated); 1: --check found a file not integrated; 2: error."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not root.exists():
        print(f"dream-plugin integrate: {root}: no such file or directory", file=err)
        return 2
    hosts = recognise(root)
    if not hosts:
        known = ", ".join(f"{r.host} ({r.file})" for r in RECIPES)
        print(f"dream-plugin integrate: {root}: no supported host file recognised; known: {known}", file=err)
        return 2
    base = root if root.is_dir() else root.parent
    if mode == "check":
        worst = 0
        for recipe, path, text in hosts:
            state = status(recipe, text)
            print(f"{path}: {recipe.host}: {state}", file=out)
            worst = max(worst, 0 if state == "integrated" else 1)
        return worst
    try:
        plans = [plan(recipe, path, text) for recipe, path, text in hosts]
    except IntegrateError as exc:  # nothing is written unless every file can be changed
        print(f"dream-plugin integrate: refused: {exc}", file=err)
        return 2
    warned: set[str] = set()
    for p in plans:
        if not p.changed:
            print(f"{p.path}: {p.recipe.host}: already integrated, nothing to do", file=out)
        elif mode == "apply":
            backup = apply_plan(p)
            print(f"{p.path}: {p.recipe.host}: integrated (backup: {backup})", file=out)
        else:
            out.write(p.diff(base))
        for note in notes_for(p.recipe, base):
            if note not in warned:
                warned.add(note)
                print(f"warning: {note}", file=err)
    if mode == "diff" and any(p.changed for p in plans):
        print("(nothing written; run again with --apply to write this change)", file=err)
    return 0


def _cmd(args: argparse.Namespace) -> int:
    mode = "apply" if args.apply else "check" if args.check else "diff"
    return run(Path(args.path), mode=mode)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "integrate",
        help="recognise a host checkout (DC/DSA, DM, MTT, IDC, official DREAM) and show or write the adapter change",
        description="Prints a unified diff of the change for every supported host file in PATH, and the host's "
        "torch-2 / CPU issues as warnings with file:line. --apply writes it (backup *.dream-plugin.orig); "
        "--check exits 0 when every recognised file is integrated, 1 otherwise.",
    )
    p.add_argument("path", help="a host checkout (folder) or one host file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--apply", action="store_true", help="write the change (keeps a backup; idempotent)")
    g.add_argument("--check", action="store_true", help="say whether the checkout is integrated (exit 1 if not)")
    p.set_defaults(func=_cmd)
