"""Which files of a checkout ``integrate`` changes, and which it must report instead.

A named recipe takes its file when the file matches its whole sampler contract. A file a named
recipe knows by name that matches only part of a contract is a *problem*: it is reported with the
pattern that failed (and the sampler's call sites with their lines), never skipped in silence. Every
other ``*.py`` file with a nested ``def get_images(c, n)`` over per-class index lists is taken by
the generic family recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dream_plugin.hosts.integrate import family
from dream_plugin.hosts.integrate.patch import family_recipe, hand_wrap_line
from dream_plugin.hosts.integrate.recipes import BEGIN, RECIPES, Recipe

__all__ = ["Target", "discover"]

_SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}


@dataclass(frozen=True)
class Target:
    """One file a recipe takes: the recipe, the file, its text, and for the family recipe its analysis."""

    recipe: Recipe
    path: Path
    rel: str
    text: str
    family: family.Analysis | None = None


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _matches(recipe: Recipe, text: str) -> bool:
    return all(re.search(p, text, flags=re.M) for p in recipe.recognise) and not any(
        re.search(p, text, flags=re.M) for p in recipe.reject
    )


def _score(r: Recipe, text: str) -> int:
    """How many of the recipe's contract patterns the file has (0 when a reject pattern matches)."""
    if any(re.search(p, text, flags=re.M) for p in r.reject):
        return 0
    return sum(1 for p in r.recognise if re.search(p, text, flags=re.M))


def _closest(recipes: list[Recipe], text: str) -> list[Recipe]:
    """The recipe matching most of its contract (none when no pattern matches)."""
    best = max(recipes, key=lambda r: _score(r, text))
    return [best] if _score(best, text) else []


def _mismatch(recipes: list[Recipe], rel: str, text: str) -> str | None:
    """Why a file known by name matches none of its recipes (None: it is not that host's file at all)."""
    scored = []
    for r in recipes:
        hits = [p for p in r.recognise if re.search(p, text, flags=re.M)]
        if hits and not any(re.search(p, text, flags=re.M) for p in r.reject):
            scored.append((len(hits), r, [p for p in r.recognise if p not in hits]))
    if not scored:
        return None
    _, r, missing = max(scored, key=lambda s: s[0])
    args = {old[old.index("("):] for old, _, _ in r.call_sites}  # "(c, args.batch_real)": renamed samplers too
    calls = [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
             if (re.search(r"\bget_images\w*\s*\(|class_sample\(", line) or any(a in line for a in args))
             and not line.lstrip().startswith("def ")]
    seen = f"; its sampler calls: {'; '.join(calls[:6])}" + (" ..." if len(calls) > 6 else "") if calls else ""
    return (f"{rel}: {r.host}: does not match the {r.host} contract: no line matches "
            + ", ".join(repr(p) for p in missing) + f"{seen}; make the change by hand ({r.doc}), or integrate the "
            "file with the generic family recipe (--family)")


def _py_files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") or part in _SKIP_DIRS or part.startswith("venv") for part in parts[:-1]):
            continue
        out.append(path)
    return out


def discover(root: Path, *, net: str | None = None, factory: str | None = None, family_only: bool = False,
             resolve: bool = True) -> tuple[list[Target], list[str]]:
    """The targets in ``root`` (a checkout folder, or one file) and the problems to report.

    ``resolve=False`` (for --check) only tells each family file's state, without working out its network.
    """
    base = root if root.is_dir() else root.parent
    targets: list[Target] = []
    problems: list[str] = []
    taken: set[Path] = set()
    if not family_only:
        names = {r.file for r in RECIPES}
        for name in sorted(names):
            path = root if root.is_file() else root / name
            if not path.is_file() or path.name != Path(name).name:
                continue
            text = _read(path)
            rel = str(path.relative_to(base))
            recipes = [r for r in RECIPES if r.file == name]
            hit = [r for r in recipes if f"{BEGIN} ({r.host}" in text or _matches(r, text)]
            if not hit and hand_wrap_line(text) is not None:  # the adapter typed in by hand: its call sites read differently
                hit = _closest(recipes, text)
            if hit:
                targets += [Target(r, path, rel, text) for r in hit]
                taken.add(path)
                continue
            problem = _mismatch(recipes, rel, text)
            if problem is not None:
                problems.append(problem)
                taken.add(path)
    candidates = [root] if root.is_file() else _py_files(root)
    for path in candidates:
        if path in taken:
            continue
        text = _read(path)
        rel = str(path.relative_to(base))
        try:
            a = family.analyse(text, rel, net=net, factory=factory, resolve=resolve)
        except family.FamilyError as exc:
            problems.append(str(exc))
            continue
        if a is not None:
            targets.append(Target(family_recipe(rel, a), path, rel, text, a))
    return targets, problems
