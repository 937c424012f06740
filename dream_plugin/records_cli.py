"""``dream-plugin records FILE``: what a host run selected, per call kind and strategy.

Reads a JSON-lines file written by the records observer (``observe.records`` / ``DREAM_RECORDS``)
and prints, for each (kind, strategy): calls, classes, re-clusterings, total seconds and its share
of all selection time, duplicates resolved, and who answered (the host sampler or a strategy).
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from typing import Any, Iterable

from .observers import read_records
from .requests import SelectionRecord

__all__ = ["add_records_parser", "summarise", "format_summary"]


def summarise(records: Iterable[SelectionRecord]) -> list[dict[str, Any]]:
    """One row per (kind, strategy), in order of first appearance."""
    groups: OrderedDict[tuple[str, str], list[SelectionRecord]] = OrderedDict()
    for r in records:
        groups.setdefault((r.kind, r.strategy), []).append(r)
    total = sum(r.seconds for rs in groups.values() for r in rs)
    rows = []
    for (kind, strategy), rs in groups.items():
        seconds = sum(r.seconds for r in rs)
        rows.append({
            "kind": kind,
            "strategy": strategy,
            "calls": len(rs),
            "classes": len({r.class_id for r in rs}),
            "reclusterings": sum(1 for r in rs if r.reclustered),
            "seconds": seconds,
            "time_share": seconds / total if total > 0 else 0.0,
            "duplicates_resolved": sum(r.duplicates_resolved for r in rs),
            "answered_by": sorted({r.answered_by for r in rs}),
            "notes": sorted({r.note for r in rs if r.note}),
        })
    return rows


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


def _cmd_records(args: argparse.Namespace) -> int:
    records = read_records(args.file)
    rows = summarise(records)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.file}: {len(records)} records")
    print(format_summary(rows))
    return 0


def add_records_parser(sub: Any) -> None:
    """Register ``dream-plugin records FILE``."""
    p = sub.add_parser("records", help="summarise a records file (observe.records / DREAM_RECORDS) per kind and strategy")
    p.add_argument("file", help="JSON-lines file of SelectionRecords")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_records)
