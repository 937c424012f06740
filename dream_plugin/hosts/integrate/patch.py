"""Plan, show, apply and check one recipe's change to one host file.

Planning is pure (text in, text out) and all-or-nothing: when the file is not what the recipe
expects (the anchor is missing or not unique, a call site appears a different number of times, a
region is absent or not exactly the known text, or the change is only partly there) it raises
:class:`IntegrateError` naming what differs, and nothing is written. A file that wraps its sampler
already (with our markers or by hand) is left alone. Applying checks every file writable before
the first write, keeps a backup next to each file and the file's line endings, and restores what it
wrote when a later write fails: all or nothing.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dream_plugin.hosts.integrate import family
from dream_plugin.hosts.integrate.recipes import BEGIN, END, WRAPPERS, Recipe, line_key

__all__ = ["IntegrateError", "Plan", "plan", "plan_family", "family_status", "apply_plan", "apply_all", "status",
           "notes_for", "hand_wrap_line"]


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


_HAND_WRAP = re.compile(r"^\s*(\w+)\s*=\s*(?:[\w.]+\.)?(" + "|".join(WRAPPERS) + r")\(", re.M)


def hand_wrap_line(text: str) -> int | None:
    """Line of a sampler wrapped without our markers (``get_images = wrap_get_images(`` ...), or None."""
    if BEGIN in text:
        return None
    m = _HAND_WRAP.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def status(recipe: Recipe, text: str) -> str:
    """``integrated``, ``integrated by hand (...)``, ``not integrated`` or ``partly integrated``."""
    hand = hand_wrap_line(text)
    if hand is not None:
        return f"integrated by hand (the adapter at line {hand})"
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
    if state.startswith("integrated"):
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
            at = [str(n) for n, line in enumerate(text.splitlines(), 1) if old in line]
            where = f" (line {', '.join(at)})" if at else ""
            raise IntegrateError(
                f"{path}: expected {count} call site(s) {old!r}, found {found}{where}; the file is not the host file "
                "this recipe knows (mark the call sites by hand, see " + recipe.doc + ")"
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
    if recipe.region_known:
        _check_region(recipe, path, lines, s, e)
    indent = _indent(lines[s])
    return "".join(lines[:s] + [indent + r + nl for r in repl] + lines[e + 1:])


def _check_region(recipe: Recipe, path: Path, lines: list[str], s: int, e: int) -> None:
    """Refuse unless lines s..e are exactly the known text (blank lines and spacing aside); show what differs."""
    found = [(i, lines[i].rstrip("\r\n")) for i in range(s, e + 1) if lines[i].strip()]
    keys = [line_key(text) for _, text in found]
    if keys == list(recipe.region_known):
        return
    diffs = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=list(recipe.region_known), b=keys).get_opcodes():
        if tag in ("replace", "insert"):
            diffs += [f"line {found[k][0] + 1} is not the known text: {found[k][1].strip()}" for k in range(j1, j2)]
        if tag in ("replace", "delete") and i2 - i1 > j2 - j1:
            after = found[j2 - 1][0] + 1 if j2 else s + 1
            diffs.append(f"{i2 - i1 - (j2 - j1)} known line(s) missing after line {after}")
    raise IntegrateError(
        f"{path}: lines {s + 1}-{e + 1}, which the {recipe.host} change replaces, are not the text it knows ("
        + "; ".join(diffs) + f"); nothing written: make the change by hand ({recipe.doc}) or restore those lines"
    )


def backup_path(path: Path) -> Path:
    base = path.with_name(path.name + ".dream-plugin.orig")
    candidate, k = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}.{k}")
        k += 1
    return candidate


def apply_plan(p: Plan) -> Path | None:
    """Write one change (backup first); None when there was nothing to do."""
    written = apply_all([p])
    return written[0][1] if written else None


def _probe(path: Path) -> None:
    """Raise OSError unless ``path`` can be rewritten and a backup created next to it (nothing is changed)."""
    with open(path, "ab"):
        pass
    fd, name = tempfile.mkstemp(prefix=".dream-plugin-probe-", dir=path.parent)
    os.close(fd)
    os.unlink(name)


def apply_all(plans: list[Plan]) -> list[tuple[Plan, Path]]:
    """Write every changed plan, all or nothing: ``(plan, backup)`` for each file written.

    Every file is checked (unchanged since it was read, writable, its folder takes the backup)
    before the first write; when a write still fails, the files written so far get their old
    text back and their backups are removed, and :class:`IntegrateError` says which file failed.
    """
    changing = [p for p in plans if p.changed]
    for p in changing:
        try:
            current = p.path.read_bytes().decode("utf-8")
            _probe(p.path)
        except OSError as exc:
            raise IntegrateError(f"{p.path}: not writable ({exc.strerror or exc}); nothing written") from None
        except UnicodeDecodeError as exc:
            raise IntegrateError(f"{p.path}: not UTF-8 text (byte {exc.start}); nothing written: make the change by "
                                 f"hand ({p.recipe.doc})") from None
        if current != p.old:
            raise IntegrateError(f"{p.path}: changed since it was read; nothing written, run again")
    done: list[tuple[Plan, Path]] = []
    for p in changing:
        backup = backup_path(p.path)
        try:
            backup.write_bytes(p.old.encode("utf-8"))
            done.append((p, backup))
            p.path.write_bytes(p.new.encode("utf-8"))
        except OSError as exc:
            left = _restore(done)
            outcome = ("every file written before it is restored, nothing changed" if not left else
                       "could not restore " + ", ".join(f"{q.path} (its original is in {b})" for q, b in left))
            raise IntegrateError(f"{p.path}: cannot write ({exc.strerror or exc}); {outcome}") from None
    return done


def _restore(done: list[tuple[Plan, Path]]) -> list[tuple[Plan, Path]]:
    """Give every file in ``done`` its old text back and drop its backup; those that could not be restored."""
    left = []
    for p, backup in reversed(done):
        try:
            if p.path.read_bytes() != p.old.encode("utf-8"):
                p.path.write_bytes(p.old.encode("utf-8"))
            backup.unlink(missing_ok=True)
        except OSError:
            left.append((p, backup))
    return left


# -- the generic family recipe ---------------------------------------------------------------------
def family_recipe(rel: str, a: family.Analysis) -> Recipe:
    """A :class:`Recipe` standing for one file integrated generically (its host name, file and page)."""
    return Recipe(host=family.HOST, file=rel, recognise=(), reject=(), anchor="", after_body=True,
                  block=tuple(family.block(a)), doc=family.DOC)


def family_status(a: family.Analysis) -> str:
    """The state of a family file, in :func:`status`'s words."""
    if a.marked_block:
        return "partly integrated" if a.plain else "integrated"
    if a.hand_wrap is not None:
        return f"integrated by hand (the adapter at line {a.hand_wrap})"
    return "partly integrated" if any(s.marked for s in a.sites) else "not integrated"


def plan_family(path: Path, rel: str, text: str, a: family.Analysis) -> Plan:
    """The generic change: each classified call site marked, the adapter block after the sampler."""
    recipe = family_recipe(rel, a)
    state = family_status(a)
    if state.startswith("integrated"):
        return Plan(recipe, path, text, text)
    if state == "partly integrated":
        raise IntegrateError(
            f"{path}: partly integrated (some call sites are marked get_images.<kind>(...) but the adapter block "
            "is missing, or the reverse); restore the file (its .dream-plugin.orig backup, or git checkout) and run again"
        )
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    by_line: dict[int, list[family.Site]] = {}
    for site in a.plain:
        by_line.setdefault(site.line, []).append(site)
    for number, sites in by_line.items():
        raw = lines[number - 1].encode("utf-8")
        for site in sorted(sites, key=lambda s: s.col, reverse=True):  # right to left: offsets stay valid
            at = site.col + len(family.SAMPLER)
            raw = raw[:at] + f".{site.kind}".encode("utf-8") + raw[at:]
        lines[number - 1] = raw.decode("utf-8")
    block = [f"{BEGIN} ({family.HOST}; see {family.DOC})", *recipe.block, END]
    new_lines = lines[: a.end_line] + [a.indent + b + nl for b in block] + lines[a.end_line:]
    return Plan(recipe, path, text, "".join(new_lines))


def notes_for(recipe: Recipe, root: Path) -> list[str]:
    """``file:line[,line...]: message`` for each torch-2 / CPU note still open in the checkout.

    Commented-out lines do not count, and a missing-import note is dealt with once its module is
    importable in this environment (the host's, where dream-plugin is installed).
    """
    out = []
    for note in recipe.notes:
        f = root / note.file
        if not f.is_file():
            continue
        if note.module and _importable(note.module):
            continue
        pattern = re.compile(note.pattern)
        lines = [line for line in f.read_text(encoding="utf-8", errors="replace").splitlines()]
        code = "\n".join("" if line.lstrip().startswith("#") else line for line in lines)
        if note.unless and re.search(note.unless, code):
            continue
        numbers = [str(n) for n, line in enumerate(code.split("\n"), 1) if line and pattern.search(line)]
        if numbers:
            out.append(f"{note.file}:{','.join(numbers)}: {note.message}")
    return out


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
