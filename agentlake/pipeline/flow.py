"""Raw, then facts: the pipeline's two stages run one after the other, for callers that want both."""

from __future__ import annotations

import time
from collections.abc import Iterable

from agentlake.log.segments import SegmentInfo
from agentlake.pipeline.facts import update_facts
from agentlake.pipeline.ingest import ingest, log_segments
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.tables.lake import Lake


def ingest_then_facts(lake: Lake, segments: Iterable[SegmentInfo], options: IngestOptions | None = None) -> IngestReport:
    """Day by day: ingest the day's segments into the raw tables, then bring its fact tables up to date.

    A day's facts are derived before the next day is ingested, so a crash on a later day leaves
    every earlier day whole.
    """
    options = options or IngestOptions()
    started = time.perf_counter()
    by_day: dict[str, list[SegmentInfo]] = {}
    for seg in segments:
        by_day.setdefault(seg.dt, []).append(seg)
    report = IngestReport()
    for day in sorted(by_day):
        report.merge(ingest(lake, by_day[day], options))
        report.snapshots.update(update_facts(lake, day, options).snapshots)
    report.seconds = time.perf_counter() - started
    return report


def ingest_pending_then_facts(lake: Lake, options: IngestOptions | None = None, day: str | None = None) -> IngestReport:
    """Every segment of the log (or of one arrival day) not held yet, then the facts of their days."""
    return ingest_then_facts(lake, log_segments(lake, day), options)
