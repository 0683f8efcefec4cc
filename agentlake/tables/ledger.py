"""What a table already holds, per arrival day, kept in the table's own properties.

Each commit that adds rows from log segments also records those segments here, in the same
Iceberg transaction (one metadata.json, atomic with the data). Unlike snapshot summaries,
table properties survive snapshot expiry and compaction, so re-ingesting an old day after a
year of maintenance still adds nothing twice.

Per day the record is compact: for each producer, the ranges of sequence numbers ingested
(a producer's consecutive segments merge into one range), plus the day's counters that
reconciliation balances: lines = rows + quarantined + duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from agentlake.errors import AgentLakeError, TerminalError
from agentlake.log.segments import SegmentInfo

LEDGER_PREFIX = "agentlake.ledger."


class LedgerCorrupt(TerminalError, AgentLakeError):
    """A segment partly overlaps what the ledger holds: segments are ingested whole or not at all."""


@dataclass
class DayLedger:
    """The segments of one arrival day a table holds, and the day's counters."""

    day: str
    producers: dict[str, list[list[int]]] = field(default_factory=dict)
    segments: int = 0
    lines: int = 0
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0
    # Segments held as a whole (corrupt, truncated, oversized, lying about their lines, or claiming
    # sequence numbers another segment holds): key -> reason. Their rows are not in the table.
    bad: dict[str, str] = field(default_factory=dict)

    @property
    def property_name(self) -> str:
        return LEDGER_PREFIX + self.day

    def holds(self, seg: SegmentInfo) -> bool:
        """Whether ``seg`` is already in the table.

        Raises:
            LedgerCorrupt: the segment's range partly overlaps a recorded range.
        """
        if seg.key in self.bad:
            return True
        for lo, hi in self.producers.get(seg.producer, ()):
            if lo <= seg.first_seq and seg.last_seq <= hi:
                return True
            if lo <= seg.last_seq and seg.first_seq <= hi:
                raise LedgerCorrupt(
                    f"segment {seg.key} overlaps the recorded range {lo}-{hi} of producer {seg.producer} "
                    "without being inside it; two different segments claim the same sequence numbers"
                )
        return False

    def add(self, seg: SegmentInfo, *, rows: int = 0, quarantined: int = 0, duplicates: int = 0) -> None:
        ranges = self.producers.setdefault(seg.producer, [])
        ranges.append([seg.first_seq, seg.last_seq])
        ranges.sort()
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.producers[seg.producer] = merged
        self.segments += 1
        self.lines += seg.lines
        self.rows += rows
        self.quarantined += quarantined
        self.duplicates += duplicates

    def add_bad(self, seg: SegmentInfo, reason: str) -> None:
        """Record ``seg`` as held as a whole: it is never read again, and reconciliation names it."""
        self.bad[seg.key] = reason
        self.segments += 1

    def copy(self) -> DayLedger:
        return DayLedger.from_json(self.day, self.to_json())

    def to_json(self) -> str:
        return orjson.dumps(
            {"p": self.producers, "segments": self.segments, "lines": self.lines, "rows": self.rows,
             "quarantined": self.quarantined, "duplicates": self.duplicates,
             **({"bad": self.bad} if self.bad else {})}
        ).decode()

    @classmethod
    def from_json(cls, day: str, text: str | None) -> DayLedger:
        if not text:
            return cls(day)
        data: dict[str, Any] = orjson.loads(text)
        return cls(
            day,
            producers={k: [list(r) for r in v] for k, v in data.get("p", {}).items()},
            segments=data.get("segments", 0),
            lines=data.get("lines", 0),
            rows=data.get("rows", 0),
            quarantined=data.get("quarantined", 0),
            duplicates=data.get("duplicates", 0),
            bad=dict(data.get("bad", {})),
        )


def read_ledger(properties: dict[str, str], day: str) -> DayLedger:
    """The ledger of ``day`` from a table's properties (empty if the day was never ingested)."""
    return DayLedger.from_json(day, properties.get(LEDGER_PREFIX + day))


def ledger_days(properties: dict[str, str]) -> list[str]:
    return sorted(k[len(LEDGER_PREFIX):] for k in properties if k.startswith(LEDGER_PREFIX))
