"""Plan, show, apply and check one recipe's change to one host file.

Planning is pure (text in, text out) and all-or-nothing: when the file is not what the recipe
expects (the anchor is missing or not unique, a call site appears a different number of times, a
region is absent, or the change is only partly there) it raises :class:`IntegrateError` naming
what differs, and nothing is written. Applying keeps a backup next to the file, keeps the
file's line endings, and is idempotent: an integrated file is left alone.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from .recipes import BEGIN, END, Recipe

__all__ = ["IntegrateError", "Plan", "plan", "apply_plan", "status", "notes_for"]


class IntegrateError(ValueError):
    """The host file is not what the recipe expects; the message says what differs."""


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    path: Path
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self, root: Path | None = None) -> str:
        name = str(self.path.relative_to(root)) if root is not None and self.path.is_relative_to(root) else self.path.name
        lines = difflib.unified_diff(
            self.old.splitlines(keepends=True), self.new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines).replace("\r\n", "\n")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def status(recipe: Recipe, text: str) -> str:
    """``integrated``, ``not integrated`` or ``partly integrated`` (some of the change is there)."""
    block = f"{BEGIN} ({recipe.host}" in text and END in text
    complete, some = [block], [block]
    if recipe.call_sites:
        marked = [new in text for _, new, _ in recipe.call_sites]
        complete.append(all(marked))
        some.append(any(marked))
    if recipe.replace_region is not None:
        region = recipe.replace_region[2][0] in text
        complete.append(region)
        some.append(region)
    old_sites = [old for old, _, _ in recipe.call_sites if old in text]
    if all(complete) and not old_sites:
        return "integrated"
    if not any(some):
        return "not integrated"
    return "partly integrated"


def plan(recipe: Recipe, path: Path, text: str) -> Plan:
    """The change for ``text`` (the content of ``path``); a no-op plan when already integrated."""
    state = status(recipe, text)
    if state == "integrated":
        return Plan(recipe, path, text, text)
    if state == "partly integrated":
        raise IntegrateError(
            f"{path}: partly integrated (some of the {recipe.host} change is there, some not); restore the "
            "file (its .dream-plugin.orig backup, or git checkout) and run again"
        )
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    anchor = re.compile(recipe.anchor)
    hits = [i for i, line in enumerate(lines) if anchor.search(line.rstrip("\r\n"))]
    if len(hits) != 1:
        raise IntegrateError(
            f"{path}: expected exactly one line matching {recipe.anchor!r} (where the {recipe.host} change goes), "
            f"found {len(hits)}; the file is not the host file this recipe knows"
        )
    at = hits[0]
    indent = _indent(lines[at])
    insert_after = at
    if recipe.after_body:
        for j in range(at + 1, len(lines)):
            body = lines[j].rstrip("\r\n")
            if not body.strip():
                continue
            if len(_indent(body)) <= len(indent):
                break
            insert_after = j
    block = [f"{BEGIN} ({recipe.host}; see {recipe.doc})", *recipe.block, END]
    new_lines = lines[: insert_after + 1] + [indent + b + nl for b in block] + lines[insert_after + 1:]
    new = "".join(new_lines)
    for old, repl, count in recipe.call_sites:
        found = new.count(old)
        if found != count:
            raise IntegrateError(
                f"{path}: expected {count} call site(s) {old!r}, found {found}; the file is not the host file this "
                "recipe knows (mark the call sites by hand, see " + recipe.doc + ")"
            )
        new = new.replace(old, repl)
    if recipe.replace_region is not None:
        new = _replace_region(recipe, path, new, nl)
    return Plan(recipe, path, text, new)


def _replace_region(recipe: Recipe, path: Path, text: str, nl: str) -> str:
    first, last, repl = recipe.replace_region  # type: ignore[misc]
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if re.search(first, line.rstrip("\r\n"))]
    if len(starts) != 1:
        raise IntegrateError(f"{path}: expected exactly one line matching {first!r}, found {len(starts)}")
    s = starts[0]
    ends = [i for i in range(s, len(lines)) if re.search(last, lines[i].rstrip("\r\n"))]
    if not ends or ends[0] - s > 40:
        raise IntegrateError(f"{path}: no line matching {last!r} within 40 lines after line {s + 1}")
    e = ends[0]
    indent = _indent(lines[s])
    return "".join(lines[:s] + [indent + r + nl for r in repl] + lines[e + 1:])


def backup_path(path: Path) -> Path:
    base = path.with_name(path.name + ".dream-plugin.orig")
    candidate, k = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}.{k}")
        k += 1
    return candidate


def apply_plan(p: Plan) -> Path | None:
    """Write the change (backup first); None when there was nothing to do."""
    if not p.changed:
        return None
    current = p.path.read_bytes().decode("utf-8")
    if current != p.old:
        raise IntegrateError(f"{p.path}: changed since it was read; run again")
    backup = backup_path(p.path)
    backup.write_bytes(p.old.encode("utf-8"))
    p.path.write_bytes(p.new.encode("utf-8"))
    return backup


def notes_for(recipe: Recipe, root: Path) -> list[str]:
    """``file:line[,line...]: message`` for each torch-2 / CPU note whose pattern is still in the checkout."""
    out = []
    for note in recipe.notes:
        f = root / note.file
        if not f.is_file():
            continue
        pattern = re.compile(note.pattern)
        text = f.read_text(encoding="utf-8", errors="replace")
        if note.unless and re.search(note.unless, text):
            continue
        numbers = [str(n) for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
        if numbers:
            out.append(f"{note.file}:{','.join(numbers)}: {note.message}")
    return out
