"""``dream-plugin records FILE``: what a host run selected, per call kind and strategy.

Reads a JSON-lines file written by the records observer (``observe.records`` / ``DREAM_RECORDS``)
and prints, for each (kind, strategy): calls, classes, re-clusterings, total seconds and its share
of all selection time, duplicates resolved, and who answered (the host sampler or a strategy).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Any, Iterable

from dream_plugin.hosts.observers import iter_entries
from dream_plugin.core.requests import SelectionRecord

__all__ = ["add_records_parser", "summarise", "summarise_runs", "format_summary"]


class _Group:
    """Running totals of one (kind, strategy): constant memory however many records."""

    def __init__(self, kind: str, strategy: str) -> None:
        self.kind, self.strategy = kind, strategy
        self.calls = self.reclusterings = self.duplicates = 0
        self.seconds = 0.0
        self.classes: set[int] = set()
        self.answered_by: set[str] = set()
        self.notes: set[str] = set()

    def add(self, r: SelectionRecord) -> None:
        self.calls += 1
        self.reclusterings += int(bool(r.reclustered))
        self.duplicates += r.duplicates_resolved
        self.seconds += r.seconds
        self.classes.add(r.class_id)
        self.answered_by.add(r.answered_by)
        if r.note:
            self.notes.add(r.note)


def _rows(groups: "OrderedDict[tuple[str, str], _Group]") -> list[dict[str, Any]]:
    total = sum(g.seconds for g in groups.values())
    return [{"kind": g.kind, "strategy": g.strategy, "calls": g.calls, "classes": len(g.classes),
             "reclusterings": g.reclusterings, "seconds": g.seconds,
             "time_share": g.seconds / total if total > 0 else 0.0, "duplicates_resolved": g.duplicates,
             "answered_by": sorted(g.answered_by), "notes": sorted(g.notes)} for g in groups.values()]


def summarise(records: Iterable[SelectionRecord]) -> list[dict[str, Any]]:
    """One row per (kind, strategy), in order of first appearance (streams ``records``)."""
    groups: OrderedDict[tuple[str, str], _Group] = OrderedDict()
    for r in records:
        key = (r.kind, r.strategy)
        if key not in groups:
            groups[key] = _Group(*key)
        groups[key].add(r)
    return _rows(groups)


def summarise_runs(entries: Iterable[tuple[dict[str, Any] | None, SelectionRecord | None]]) -> list[dict[str, Any]]:
    """Per run (each header starts one; records before any header form a run without one):
    ``{"header", "records", "rows"}``. Streams ``entries`` (:func:`~dream_plugin.hosts.observers.iter_entries`)."""
    runs: list[dict[str, Any]] = []
    groups: OrderedDict[tuple[str, str], _Group] = OrderedDict()
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None and (current["header"] is not None or current["records"]):
            current["rows"] = _rows(groups)
            runs.append(current)

    for header, record in entries:
        if header is not None or current is None:
            close()
            groups = OrderedDict()
            current = {"header": header, "records": 0}
            if header is not None:
                continue
        key = (record.kind, record.strategy)
        if key not in groups:
            groups[key] = _Group(*key)
        groups[key].add(record)
        current["records"] += 1
    close()
    return runs


def format_summary(rows: list[dict[str, Any]]) -> str:
    head = ["kind", "strategy", "calls", "classes", "re-clusterings", "seconds", "time share", "duplicates resolved",
            "answered by"]
    body = [[r["kind"], r["strategy"], str(r["calls"]), str(r["classes"]), str(r["reclusterings"]),
             f"{r['seconds']:.3f}", f"{100 * r['time_share']:.1f}%", str(r["duplicates_resolved"]),
             ", ".join(r["answered_by"])] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    for r in rows:
        for note in r["notes"]:
            lines.append(f"note ({r['kind']}, {r['strategy']}): {note}")
    return "\n".join(lines)


def _describe_header(h: dict[str, Any] | None) -> str:
    if h is None:
        return "records before any run header"
    return (f"started {h.get('started', '?')} on {h.get('host', '?')}, pid {h.get('pid', '?')}, rank "
            f"{h.get('rank', '?')}: {h.get('command', '?')}")


def _cmd_records(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    runs = summarise_runs(iter_entries(args.file, warn=warnings.append))
    for w in warnings:
        print(f"dream-plugin: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"run": i, **row} for i, run in enumerate(runs, 1) for row in run["rows"]], indent=2))
        return 0
    total = sum(r["records"] for r in runs)
    print(f"{args.file}: {total} records in {len(runs)} run(s)")
    for i, run in enumerate(runs, 1):
        print(f"\nrun {i}: {_describe_header(run['header'])}; {run['records']} records")
        print(format_summary(run["rows"]))
    return 0


def add_records_parser(sub: Any) -> None:
    """Register ``dream-plugin records FILE``."""
    p = sub.add_parser("records", help="summarise a records file (observe.records / DREAM_RECORDS) per kind and strategy")
    p.add_argument("file", help="JSON-lines file of SelectionRecords")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_records)
