"""An ingest run in its own process, started together with others, for the concurrency tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agentlake.config import Settings
from agentlake.gate.suites import QualityPolicy
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.pipeline.stage import IngestOptions
from agentlake.tables.lake import Lake

MEET_AT = "before-commit:events"  # on the gated path, inside the publish: after the batch was staged and audited


def meeting_before_the_first_commit(meet: Any, stage_log: list[str] | None = None) -> Any:
    """A checkpoint that waits for the other writers the first time ``raw.events`` is about to be committed.

    Every writer then commits from table state read before any of them did: all but one must
    conflict, so a test that counts conflicts never passes because the race was not run.
    """
    met = threading.Event()

    def checkpoint(stage: str) -> None:
        if stage_log is not None:
            stage_log.append(stage)
        if stage == MEET_AT and not met.is_set():
            met.set()
            try:
                meet.wait(timeout=120)
            except threading.BrokenBarrierError:  # another writer failed: the test reports it
                pass

    return checkpoint


def ingest_in_process(home: str, run_id: str, barrier: Any, results: Any, meet: Any = None,
                      gated: bool = False) -> None:
    """Open the lake, wait for the others, ingest everything pending; put ``(run_id, status, report)``.

    Args:
        meet: a barrier of all the writers, met before the first commit of ``raw.events``.
        gated: through the quality gate with the deployment's policy, as the CLI and Dagster ingest.
    """
    try:
        lake = Lake(Settings(home=Path(home)))
        lake.catalog  # noqa: B018 - open (and create) the catalog before the start line
        barrier.wait(timeout=120)
        options = IngestOptions(run_id=run_id, quality=QualityPolicy.from_settings(lake.settings) if gated else None,
                                checkpoint=meeting_before_the_first_commit(meet) if meet is not None else None)
        report = ingest_pending_then_facts(lake, options)
        results.put((run_id, "ok", report.as_dict()))
    except BaseException as exc:  # report anything, so that the parent never waits for nothing
        barrier.abort()  # and the other worker does not wait for this one
        if meet is not None:
            meet.abort()
        results.put((run_id, "error", repr(exc)))
