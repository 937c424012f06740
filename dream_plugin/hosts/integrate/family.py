"""The generic recipe: any file of the DC family with a nested ``def get_images(c, n)``.

DC introduced a sampler that later codebases copy (DATM, IDM, DataDAM and many forks): all training
images in one tensor, per-class index lists, and ``get_images(c, n)`` drawing ``n`` images of class
``c`` from ``indices_class[c]``. This module reads such a file with :mod:`ast` (no host code is
executed or copied) and works out the change a named recipe would spell out by hand:

* the sampler: a ``def get_images(c, n)`` (defaults allowed) whose body indexes a per-class list
  with ``c`` and returns rows of an images tensor: those two names go into the adapter call;
* each call site, by what its size argument says: ``args.ipc`` → ``init``, ``args.batch_real`` →
  ``match``, a BatchNorm size (a name with ``bn`` in it) → ``bn``, the whole class
  ``len(indices_class[c])`` → ``whole`` (a pass-through fetch), ``c=None`` (a draw over every
  class, not a per-class sample) → the host sampler itself; anything else is left unmarked and
  listed (the adapter then infers its kind from ``n`` at run time);
* the live network: the one name assigned from ``get_network(args.model, ...)``; its factory: the
  right-hand side of that assignment. Several candidates are never chosen between: the user names
  them (``--net NAME``, ``--net-factory EXPR``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from dream_plugin.hosts.integrate.recipes import BEGIN, WRAPPERS

__all__ = ["FamilyError", "Site", "Analysis", "analyse", "is_candidate", "MARKS", "DOC", "HOST"]

HOST = "family"
DOC = "docs/hosts/family.md"
SAMPLER = "get_images"
MARKS = ("init", "match", "bn", "whole", "host_sampler")
"""Attributes of the wrapped sampler that a marked call site uses."""
_DEF = re.compile(r"^\s*def get_images\(", re.M)


class FamilyError(ValueError):
    """The file has a ``get_images`` but the change cannot be worked out; the message says why and what to pass."""


@dataclass(frozen=True)
class Site:
    """One call of the sampler: where, its text, and the kind its size argument says."""

    line: int
    col: int
    """Byte offset of ``get_images`` in its line (as :mod:`ast` counts)."""
    text: str
    kind: str | None
    """``init``, ``match``, ``bn``, ``whole``, ``host_sampler`` or None (unclassified)."""
    marked: bool
    """Already ``get_images.<kind>(...)``."""
    size: str = ""

    @property
    def replacement(self) -> str:
        """The call as the change writes it (unchanged when unclassified or already marked)."""
        if self.marked or self.kind is None:
            return self.text
        return f"{SAMPLER}.{self.kind}" + self.text[len(SAMPLER):]

    def advice(self) -> str:
        """What to write at an unclassified call site."""
        rest = self.text[len(SAMPLER):]
        return (f"`{self.text}` is not classified (its size `{self.size}` is none of args.ipc, args.batch_real, a BN "
                f"size, len(indices_class[c])); the adapter infers its kind from n at run time. To fix it, write "
                f"`{SAMPLER}.init{rest}` if it initialises the synthetic set, `{SAMPLER}.match{rest}` for a real batch "
                f"to match against, `{SAMPLER}.bn{rest}` for BatchNorm statistics")


@dataclass(frozen=True)
class Analysis:
    """What the generic recipe found in one file."""

    def_line: int
    end_line: int
    indent: str
    images: str
    indices: str
    sites: tuple[Site, ...]
    marked_block: bool
    """Our begin/end markers are present."""
    hand_wrap: int | None
    """Line of a ``get_images = wrap_get_images(...)`` written without our markers (None: none)."""
    net: str | None = None
    factory: str | None = None
    sizes: dict[str, str] = field(default_factory=dict)

    @property
    def plain(self) -> list[Site]:
        return [s for s in self.sites if not s.marked and s.kind is not None]

    @property
    def unclassified(self) -> list[Site]:
        return [s for s in self.sites if not s.marked and s.kind is None]

    @property
    def kinds(self) -> set[str]:
        return {s.kind for s in self.sites if s.kind is not None}


def is_candidate(text: str) -> bool:
    """Cheap test before parsing: the file defines a ``get_images``."""
    return bool(_DEF.search(text))


def _sampler_def(tree: ast.AST) -> list[tuple[ast.FunctionDef, str, str]]:
    """Every ``def get_images(c, n)`` drawing from a per-class list: (node, images name, indices name)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.name != SAMPLER:
            continue
        params = [a.arg for a in node.args.posonlyargs + node.args.args]
        if len(params) != 2:
            continue
        c = params[0]
        indices = next((s.value.id for s in ast.walk(node) if isinstance(s, ast.Subscript)
                        and isinstance(s.value, ast.Name) and isinstance(s.slice, ast.Name) and s.slice.id == c), None)
        images = next((r.value.value.id for r in ast.walk(node) if isinstance(r, ast.Return)
                       and isinstance(r.value, ast.Subscript) and isinstance(r.value.value, ast.Name)), None)
        if indices and images:
            found.append((node, images, indices))
    return found


def _classify(call: ast.Call, indices: str) -> tuple[str | None, str]:
    """The kind a plain ``get_images(...)`` call's arguments say, and the size text."""
    args = list(call.args)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    c = args[0] if args else kw.get("c")
    n = args[1] if len(args) > 1 else kw.get("n")
    if isinstance(c, ast.Constant) and c.value is None:
        return "host_sampler", ast.unparse(n) if n is not None else ""
    if c is None or n is None or len(args) + len(call.keywords) != 2:
        return None, ast.unparse(n) if n is not None else ""
    size = ast.unparse(n)
    if isinstance(n, ast.Attribute) and n.attr == "ipc":
        return "init", size
    if isinstance(n, ast.Attribute) and n.attr == "batch_real":
        return "match", size
    name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
    if re.search(r"(?i)bn", name):
        return "bn", size
    if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "len" and len(n.args) == 1
            and isinstance(n.args[0], ast.Subscript) and isinstance(n.args[0].value, ast.Name)
            and n.args[0].value.id == indices and ast.unparse(n.args[0].slice) == ast.unparse(c)):
        return "whole", size
    return None, size


def _sites(tree: ast.AST, text: str, indices: str) -> list[Site]:
    sites = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        segment = ast.get_source_segment(text, node) or ""
        if isinstance(f, ast.Name) and f.id == SAMPLER:
            kind, size = _classify(node, indices)
            sites.append(Site(node.lineno, f.col_offset, segment, kind, False, size))
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == SAMPLER and f.attr in MARKS:
            sites.append(Site(node.lineno, f.value.col_offset, segment, f.attr, True))
    return sorted(sites, key=lambda s: (s.line, s.col))


def _hand_wrap(tree: ast.AST) -> int | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == SAMPLER for t in node.targets):
            v = node.value
            if isinstance(v, ast.Call):
                name = v.func.id if isinstance(v.func, ast.Name) else v.func.attr if isinstance(v.func, ast.Attribute) else ""
                if name in WRAPPERS:
                    return node.lineno
    return None


def _network_assignments(tree: ast.AST, text: str) -> list[tuple[str, str, int]]:
    """``(name, right-hand side, line)`` for each ``NAME = get_network(args.model, ...)[.to(...)]``."""
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        inner = node.value
        while isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute):
            inner = inner.func.value  # get_network(...).to(device).eval() → get_network(...)
        if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "get_network"
                and inner.args and ast.unparse(inner.args[0]) == "args.model"):
            segment = ast.get_source_segment(text, node.value) or ""
            out.append((node.targets[0].id, segment if "\n" not in segment else ast.unparse(node.value), node.lineno))
    return sorted(out, key=lambda t: t[2])


def _bn_literal(tree: ast.AST, size: str) -> str | None:
    """The int a BN size name is set to (``BNSizePC = 16`` → ``16``), when the file sets it once."""
    if size.isdigit():
        return size
    values = {node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
              and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
              and any(ast.unparse(t) == size for t in node.targets)}
    return str(values.pop()) if len(values) == 1 else None


def _one(values: set[str]) -> str | None:
    return next(iter(values)) if len(values) == 1 else None


def analyse(text: str, where: str, *, net: str | None = None, factory: str | None = None,
            resolve: bool = True) -> Analysis | None:
    """The generic change for one file's text; None when it has no family sampler.

    Raises :class:`FamilyError` when the file has a family sampler but the change cannot be
    worked out without a choice only the user can make (several samplers; which network).
    ``resolve=False`` skips working out the network (enough to tell the file's state).
    """
    if not is_candidate(text):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise FamilyError(f"{where}:{exc.lineno}: defines get_images but is not Python 3 source this "
                          f"Python can parse ({exc.msg}); integrate it by hand ({DOC})") from None
    defs = _sampler_def(tree)
    if not defs:
        return None
    if len(defs) > 1:
        lines = ", ".join(str(d.lineno) for d, _, _ in defs)
        raise FamilyError(f"{where}: {len(defs)} get_images samplers (lines {lines}); the generic recipe wraps one "
                          f"per file: integrate this file by hand ({DOC})")
    node, images, indices = defs[0]
    lines = text.splitlines()
    def_text = lines[node.lineno - 1]
    sites = _sites(tree, text, indices)
    marked_block, hand = f"{BEGIN} ({HOST}" in text, _hand_wrap(tree)
    sizes: dict[str, str] = {}
    if resolve and not marked_block and hand is None:  # the change is still to be made: work out what goes in the block
        net, factory = _networks(tree, text, where, sites, net, factory)
        sizes = _sizes(tree, sites)
    return Analysis(
        def_line=node.lineno, end_line=node.end_lineno or node.lineno,
        indent=def_text[: len(def_text) - len(def_text.lstrip())], images=images, indices=indices,
        sites=tuple(sites), marked_block=marked_block, hand_wrap=hand,
        net=net, factory=factory, sizes=sizes,
    )


def _networks(tree: ast.AST, text: str, where: str, sites: list[Site], net: str | None,
              factory: str | None) -> tuple[str | None, str | None]:
    """The live network's name and the factory expression: given, or the file's one candidate."""
    kinds = {s.kind for s in sites}
    nets = _network_assignments(tree, text)
    if net is None and ("match" in kinds or "bn" in kinds or None in kinds):
        names = sorted({name for name, _, _ in nets})
        if len(names) > 1:
            found = "; ".join(f"{name} (line {ln})" for name, _, ln in nets)
            raise FamilyError(f"{where}: several networks are built with get_network(args.model, ...): {found}; "
                              "say which one the matching runs on with --net NAME")
        if names:
            net = names[0]
        elif "match" in kinds or "bn" in kinds:
            raise FamilyError(f"{where}: no live network found (no NAME = get_network(args.model, ...)) for the "
                              "match / bn call sites; name it with --net NAME (and --net-factory EXPR)")
    if factory is None:
        candidates = [(r, ln) for name, r, ln in nets if net is None or name == net]
        factory = _one({r for r, _ in candidates})
        if factory is None and candidates and "init" in kinds:
            found = "; ".join(f"line {ln}: {r}" for r, ln in candidates)
            raise FamilyError(f"{where}: the network is built in {len({r for r, _ in candidates})} different ways "
                              f"({found}); say which one builds a fresh network for initialisation with "
                              "--net-factory EXPR")
        if factory is None and "init" in kinds:
            raise FamilyError(f"{where}: no network constructor found (NAME = get_network(args.model, ...)) to "
                              "initialise with; pass --net-factory EXPR (an expression building a fresh network)")
    return net, factory


def _sizes(tree: ast.AST, sites: list[Site]) -> dict[str, str]:
    """``init_n`` / ``bn_n`` / ``match_n`` for plain calls the adapter has to infer, from the classified sites."""
    sizes = {}
    for kind, key in (("init", "init_n"), ("bn", "bn_n"), ("match", "match_n")):
        value = _one({s.size for s in sites if s.kind == kind and not s.marked})
        if kind == "bn" and value is not None:
            value = _bn_literal(tree, value)  # the BN size is set after the sampler: its value goes in
        if value is not None:
            sizes[key] = value
    return sizes


def block(a: Analysis) -> list[str]:
    """The adapter block for this file (without markers and indentation)."""
    out = ["from dream_plugin.adapters import wrap_get_images", f"{SAMPLER} = wrap_get_images(",
           f"    {SAMPLER}, {a.images}, {a.indices},"]
    if a.net:
        out.append(f"    net=lambda: {a.net},  # the live network, looked up at every call")
    if a.factory:
        out.append(f"    net_factory=lambda: {a.factory},")
    if a.sizes:
        out.append("    " + ", ".join(f"{k}={v}" for k, v in a.sizes.items()) + ",")
    out.append(")")
    return out
