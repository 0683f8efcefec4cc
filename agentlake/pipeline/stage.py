"""What every pipeline stage shares: how it is asked to run, and what it reports.

Ingestion (:mod:`agentlake.pipeline.ingest`) and the fact tables (:mod:`agentlake.pipeline.facts`)
take the same options and return the same report, so a caller that wants "raw, then facts"
runs one and then the other (:func:`agentlake.pipeline.flow.ingest_then_facts`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentlake.config import setting_default
from agentlake.gate.suites import QualityPolicy
from agentlake.storage.retry import DEFAULT_POLICY, RetryPolicy
from agentlake.tables.files import Checkpoint

if TYPE_CHECKING:
    from agentlake.gate.batch import GateOutcome


@dataclass
class IngestOptions:
    """How to ingest: who is ingesting (stamped on every commit) and the dedup window."""

    run_id: str = field(default_factory=lambda: f"cli-{uuid.uuid4().hex[:12]}")
    partition: str | None = None
    dedup_window_days: int = setting_default("dedup_window_days")
    chunk_bytes: int = 16 * 1024 * 1024
    retry: RetryPolicy = DEFAULT_POLICY  # how conflicts and store outages are retried
    checkpoint: Checkpoint | None = None
    # The write-audit-publish gate of raw.events (agentlake.gate); None commits straight to main.
    quality: QualityPolicy | None = None
    override: str | None = None  # publish even if a batch rule fails, for this recorded reason
    # The Dagster run that commits, stamped on every snapshot as agentlake.dagster_run_id (empty: the CLI).
    dagster_run_id: str = ""


@dataclass
class IngestReport:
    """What one ingest did, for the UI's metadata and the CLI."""

    segments: int = 0
    segments_skipped: int = 0
    lines: int = 0
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0
    conflicts: int = 0
    fast_lines: int = 0
    slow_lines: int = 0
    first_key: str | None = None
    last_key: str | None = None
    snapshots: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    store_retries: int = 0  # attempts started again because the object store failed
    seconds: float = 0.0
    segments_held: int = 0  # segments whose batch failed its audit: staged on a branch, not on main
    lines_held: int = 0  # the lines of those segments
    segments_bad: int = 0  # segments held as a whole (corrupt, truncated, oversized, lying): named by reconcile
    rules_quarantined: int = 0  # rows quarantined by a row rule of the quality suite
    gate: list[GateOutcome] = field(default_factory=list)  # each batch's audit and what the gate did

    def merge(self, other: IngestReport) -> None:
        self.segments_held += other.segments_held
        self.lines_held += other.lines_held
        self.segments_bad += other.segments_bad
        self.rules_quarantined += other.rules_quarantined
        self.gate += other.gate
        for name in ("segments", "segments_skipped", "lines", "rows", "quarantined", "duplicates", "conflicts",
                     "fast_lines", "slow_lines", "attempts", "store_retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        keys = [k for k in (self.first_key, other.first_key) if k]
        self.first_key = min(keys) if keys else None
        keys = [k for k in (self.last_key, other.last_key) if k]
        self.last_key = max(keys) if keys else None
        self.snapshots.update(other.snapshots)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable (the CLI's ``--json``)."""
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "gate": [g.as_dict() for g in self.gate]}
