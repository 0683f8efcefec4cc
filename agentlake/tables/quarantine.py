"""Rows of ``raw.quarantine``: a bad line kept whole, with its segment, offset, rule and reason.

A line is quarantined either as it is parsed (the parser hands it over) or later, once a row
made from it turns out bad (a conflicting repeat, a row rule of the audit). Rows keep only
their lineage, not their line, so those later ones re-read their lines from the log, in
:func:`quarantine_lines`: the line stored is the log's exact bytes either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from agentlake.log.reader import LogReader
from agentlake.log.segments import SegmentInfo


@dataclass(frozen=True)
class Verdict:
    """Why one line of a segment is quarantined: the rule it broke, the reason, its event id if known."""

    rule: str
    reason: str
    event_id: str | None = None


def quarantine_row(seg: SegmentInfo, offset: int, line: bytes, verdict: Verdict, run_id: str) -> pa.Table:
    """The ``raw.quarantine`` row of line ``offset`` of ``seg``, quarantined by ingest run ``run_id``."""
    return quarantine_rows(seg, [(offset, line, verdict)], run_id)


def quarantine_rows(seg: SegmentInfo, lines: Sequence[tuple[int, bytes, Verdict]], run_id: str) -> pa.Table:
    """The ``raw.quarantine`` rows of these lines of ``seg`` as one table: a million bad lines cost
    their bytes and a few Arrow buffers, not a table (kilobytes) each."""
    n = len(lines)
    offsets = [offset for offset, _, _ in lines]
    return pa.table({
        "segment_key": pa.array([seg.key] * n, pa.string()), "line_offset": pa.array(offsets, pa.int64()),
        "producer": pa.array([seg.producer] * n, pa.string()),
        "seq": pa.array([seg.first_seq + offset for offset in offsets], pa.int64()),
        "arrival": pa.array([seg.arrival] * n, pa.timestamp("us", tz="UTC")),
        "line": pa.array([line for _, line, _ in lines], pa.binary()),
        "rule": pa.array([v.rule for _, _, v in lines], pa.string()),
        "reason": pa.array([v.reason for _, _, v in lines], pa.string()),
        "event_id": pa.array([v.event_id for _, _, v in lines], pa.string()),
        "ingest_run_id": pa.array([run_id] * n, pa.string()),
    })


def quarantine_lines(
    log: LogReader,
    segments: Mapping[str, SegmentInfo],
    lines: Iterable[tuple[str, int, Verdict]],
    run_id: str,
) -> list[pa.Table]:
    """Re-read the ``(segment key, line offset, verdict)`` lines from the log and quarantine them.

    Each segment is read once, in the order it first appears in ``lines``; its rows come in line
    order. ``segments`` maps each key to its segment. A line named twice gets its last verdict.
    """
    by_segment: dict[str, dict[int, Verdict]] = {}
    for key, offset, verdict in lines:
        by_segment.setdefault(key, {})[offset] = verdict
    rows = []
    for key, wanted in by_segment.items():
        for offset, line in enumerate(log.read_lines(key)):
            if (found := wanted.get(offset)) is not None:
                rows.append(quarantine_row(segments[key], offset, line, found, run_id))
    return rows
