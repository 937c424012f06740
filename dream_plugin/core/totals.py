"""What a selector keeps of its records: running totals and the most recent records, so memory stays flat.

Every record goes to the ``selection_done`` observers as it is made (the records file streams them
to disk); the selector itself keeps :class:`SelectionTotals` (counts and seconds per call kind) and
:class:`RecentRecords`, the last :data:`RECENT` records (for an adapter's ``records[-1]`` and for
interactive inspection). A host run of millions of calls then holds the same memory as one of a
thousand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dream_plugin.core.requests import SelectionRecord

RECENT = 1000
"""How many of the latest records a selector keeps in ``Selector.records``."""


class RecentRecords(list):
    """A list of the latest records: appending beyond ``2 * keep`` drops the oldest ``keep`` at once
    (amortised O(1); between ``keep`` and ``2 * keep`` records are held)."""

    def __init__(self, keep: int = RECENT) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep

    def append(self, record: Any) -> None:
        super().append(record)
        if len(self) > 2 * self.keep:
            del self[: len(self) - self.keep]


@dataclass
class KindTotals:
    calls: int = 0
    reclusterings: int = 0
    seconds: float = 0.0


@dataclass
class SelectionTotals:
    """Every record's count and time, per call kind ('init', 'match', 'bn'), over the selector's life."""

    by_kind: dict[str, KindTotals] = field(default_factory=dict)

    def add(self, record: SelectionRecord) -> None:
        t = self.by_kind.setdefault(record.kind, KindTotals())
        t.calls += 1
        t.reclusterings += int(bool(record.reclustered))
        t.seconds += record.seconds

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.by_kind.values())

    @property
    def reclusterings(self) -> int:
        return sum(t.reclusterings for t in self.by_kind.values())

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.by_kind.values())
