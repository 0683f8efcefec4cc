"""An ingest run in its own process, started together with others, for the concurrency tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlake.config import Settings
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.pipeline.stage import IngestOptions
from agentlake.tables.lake import Lake


def ingest_in_process(home: str, run_id: str, barrier: Any, results: Any) -> None:
    """Open the lake, wait for the others, ingest everything pending; put ``(run_id, status, report)``."""
    try:
        lake = Lake(Settings(home=Path(home)))
        lake.catalog  # noqa: B018 - open (and create) the catalog before the start line
        barrier.wait(timeout=120)
        report = ingest_pending_then_facts(lake, IngestOptions(run_id=run_id))
        results.put((run_id, "ok", report.as_dict()))
    except BaseException as exc:  # report anything, so that the parent never waits for nothing
        barrier.abort()  # and the other worker does not wait for this one
        results.put((run_id, "error", repr(exc)))
