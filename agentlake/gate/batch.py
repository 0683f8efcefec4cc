"""The quality gate of ``raw.events``: stage a batch on a branch, audit it, publish it or hold it back.

Called by ingestion (:mod:`agentlake.pipeline.ingest`) in place of a direct commit to ``main``:

1. the batch's data files are committed to a staging branch (:func:`agentlake.gate.publish.stage`);
2. the events suite (:mod:`agentlake.gate.suites`) runs on exactly the rows the branch adds;
3. a broken **batch** rule holds the batch: nothing publishes, the branch stays for inspection and
   the segments are recorded as held (not in the ledger, so a later run can take them);
4. otherwise rows that broke a **row** rule are dropped from the branch (they go to quarantine with
   the rule's name) and ``main`` moves to the branch with the updated ledger, in one transaction.

Every audit's Great Expectations validation result and its Data Docs page are kept beside the
staged snapshot (:mod:`agentlake.gate.validations`); the outcome (:class:`GateOutcome`) names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import SecretStr
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from agentlake.gate.publish import (
    AlreadyPublished,
    Staged,
    branch_name,
    discard,
    held,
    hold,
    publish,
    read_files,
    stage,
    without_held,
)
from agentlake.gate.suites import (
    EVENT_AUDIT_COLUMNS,
    AuditResult,
    QualityPolicy,
    RuleResult,
    Suite,
    describe_failure,
    event_audit_frame,
    events_suite,
    schema_breaking_changes,
    validate,
)
from agentlake.gate.validations import KeptValidation, keep_validation
from agentlake.log.segments import SegmentInfo
from agentlake.storage.store import ObjectStore
from agentlake.tables.ledger import DayLedger, read_ledger
from agentlake.tables.schemas import EVENTS
from agentlake.tables.window import IdWindow

Checkpoint = Callable[[str], None]


@dataclass
class BadRow:
    """A staged row that broke row rules: it goes to quarantine instead of ``main``."""

    segment_key: str
    line_offset: int
    event_id: str | None
    rules: list[str]
    reason: str


@dataclass
class GateOutcome:
    """What the gate did with one batch of one table: where it was staged, its audit, and whether it published."""

    table: str
    branch: str
    staged_snapshot_id: int
    audit: AuditResult
    published_snapshot_id: int | None = None
    held: bool = False
    override: str | None = None
    bad_rows: list[BadRow] = field(default_factory=list)
    validation: KeptValidation | None = None  # the GX result and Data Docs page, when kept in a store

    @property
    def results(self) -> list[RuleResult]:
        """Each expectation's outcome on this batch."""
        return self.audit.results

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable (the CLI's ``--json``)."""
        return {"table": self.table, "branch": self.branch, "staged_snapshot_id": self.staged_snapshot_id,
                "published_snapshot_id": self.published_snapshot_id, "held": self.held, "override": self.override,
                "validation_result": self.validation.result_uri if self.validation else None,
                "data_docs": self.validation.page_uri if self.validation else None,
                "audit": self.audit.as_dict()}


def gate_events(
    table: Table,
    day: str,
    segments: list[SegmentInfo],
    files: list[DataFile],
    counts: dict[str, dict[str, int]],
    ids_on_main: IdWindow,
    *,
    policy: QualityPolicy,
    run_id: str,
    snapshot_properties: dict[str, str],
    make_ledger: Callable[[DayLedger], DayLedger],
    check: Checkpoint,
    rewrite: Callable[[list[pa.Table]], list[DataFile]],
    override: str | None = None,
    store: ObjectStore | None = None,
    signing_key: SecretStr | None = None,
) -> GateOutcome:
    """Write, audit and publish (or hold) one day's batch of ``raw.events`` rows.

    Args:
        counts: per segment key, the batch's rows, quarantined lines and duplicates; rows that
            break a row rule are moved from ``rows`` to ``quarantined`` here.
        ids_on_main: the ids ``main`` holds in the day's dedup window (no staged row may be one of them).
        make_ledger: the day's ledger with the batch's segments added (from ``counts``), given
            the ledger ``main`` holds now.
        override: publish even if a batch rule failed, for this recorded reason.
        store: where the validation result and its Data Docs page are kept (none: not kept).
        signing_key: ``AGENTLAKE_SIGNING_KEY``; the kept validation result is signed with it.

    Raises:
        CommitFailedException: another writer published these segments first; start the day again.
    """
    base_schema = table.schema() if table.current_snapshot() is not None else None
    stage_properties = {**snapshot_properties, "agentlake.staged": "true"}
    if override is not None:
        stage_properties["agentlake.override-reason"] = override
    staged = stage(table, files, branch_name(run_id, day), stage_properties)
    check("after-stage:events")
    # File by file, keeping only the audited and derived columns: memory stays near the frame's size.
    frames, sizes = [], []
    for data_file in staged.files:
        (part,) = read_files(table, [data_file], list(EVENT_AUDIT_COLUMNS))
        frames.append(event_audit_frame(part, ids_on_main.holds(pl.Series(part.column("event_id")))))
        sizes.append(part.num_rows)
        del part
    empty = EVENTS.arrow_schema().empty_table().select(list(EVENT_AUDIT_COLUMNS))
    frame = pl.concat(frames) if frames else event_audit_frame(empty, pl.Series("event_id", [], dtype=pl.String))
    del frames
    keys = {s.key for s in segments}
    lines = sum(s.lines for s in segments)
    expected = sum(counts[k]["rows"] for k in keys)
    already_quarantined = sum(counts[k]["quarantined"] for k in keys)
    staged_schema = table.schemas().get(table.metadata.snapshot_by_id(staged.snapshot_id).schema_id or 0)  # type: ignore[union-attr]
    breaking = schema_breaking_changes(base_schema, staged_schema or table.schema())

    def batch_figures(partial: AuditResult) -> dict[str, Any]:
        quarantined = already_quarantined + len(partial.bad_rows)
        return {"lines": lines, "rows": expected - len(partial.bad_rows), "quarantined": quarantined,
                "quarantine_share": quarantined / lines if lines else 0.0,
                "schema_breaking_changes": len(breaking)}

    suite = events_suite(policy, expected_rows=expected)
    audit = validate(suite, frame.drop("segment_key", "line_offset"), batch_figures)
    outcome = GateOutcome(EVENTS.name, staged.branch, staged.snapshot_id, audit, override=override)
    outcome.validation = _keep(store, outcome, run_id, signing_key)
    check("after-audit:events")
    if not audit.passed and override is None:
        hold(table, day, staged, sorted(keys), _held_record(outcome, run_id, frame.height))
        outcome.held = True
        return outcome
    if audit.bad_rows:
        outcome.bad_rows = _bad_rows(frame, audit, suite)
        staged = _drop_bad_rows(table, staged, sizes, audit, rewrite, snapshot_properties)
        for bad in outcome.bad_rows:
            counts[bad.segment_key]["rows"] -= 1
            counts[bad.segment_key]["quarantined"] += 1
    quality = {
        "agentlake.audit.suite": audit.suite,
        "agentlake.audit.passed": str(audit.passed).lower(),
        "agentlake.audit.rows-quarantined": str(len(outcome.bad_rows)),
        "agentlake.audit.failed": ",".join(r.rule for r in audit.results if not r.passed),
        "agentlake.staged-branch": staged.branch,
        "agentlake.rows-added": str(sum(counts[k]["rows"] for k in keys)),
    }
    if override is not None:
        quality["agentlake.override-reason"] = override

    def still_wanted(fresh: Table) -> bool:
        ledger = read_ledger(fresh.properties, day)
        return not any(ledger.holds(s) for s in segments)

    earlier = {v["branch"] for k, v in held(table.properties, day).items() if k in keys}
    try:
        outcome.published_snapshot_id = publish(
            table, staged, lambda fresh: _publish_properties(fresh, day, sorted(keys), make_ledger),
            snapshot_properties={**snapshot_properties, **quality}, check=check, still_wanted=still_wanted,
        )
    except AlreadyPublished as exc:
        raise CommitFailedException(str(exc)) from exc
    # Branches of earlier, held attempts at these segments: published now, no longer needed.
    still_held = {v["branch"] for v in held(table.properties, day).values()}
    for branch in sorted(earlier - still_held):
        discard(table, branch)
    return outcome


def _keep(
    store: ObjectStore | None, outcome: GateOutcome, run_id: str, signing_key: SecretStr | None
) -> KeptValidation | None:
    if store is None:
        return None
    return keep_validation(store, outcome.table, outcome.staged_snapshot_id, outcome.audit,
                           {"branch": outcome.branch, "run_id": run_id}, signing_key=signing_key)


def _held_record(outcome: GateOutcome, run_id: str, rows: int) -> dict[str, Any]:
    record: dict[str, Any] = {"run_id": run_id, "failed": outcome.audit.batch_failures, "rows": rows,
                              "audit": [r.as_dict() for r in outcome.audit.results if not r.passed]}
    if outcome.validation is not None:
        record["validation_result"] = outcome.validation.result_key
    return record


def _publish_properties(
    table: Table, day: str, keys: list[str], make_ledger: Callable[[DayLedger], DayLedger]
) -> tuple[dict[str, str], tuple[str, ...]]:
    ledger = make_ledger(read_ledger(table.properties, day))
    props, remove = without_held(table.properties, day, keys)
    return {ledger.property_name: ledger.to_json(), **props}, remove


def _bad_rows(frame: pl.DataFrame, audit: AuditResult, suite: Suite) -> list[BadRow]:
    out = []
    for index, rules in sorted(audit.bad_rows.items()):
        row = frame.row(index, named=True)
        out.append(BadRow(str(row["segment_key"]), row["line_offset"], row["event_id"], rules,
                          describe_failure(rules, suite)))
    return out


def _drop_bad_rows(
    table: Table, staged: Staged, sizes: list[int], audit: AuditResult,
    rewrite: Callable[[list[pa.Table]], list[DataFile]], snapshot_properties: dict[str, str],
) -> Staged:
    from agentlake.gate.publish import drop_rows

    masks = []
    start = 0
    bad = sorted(audit.bad_rows)
    for size in sizes:
        keep = [True] * size
        for index in bad:
            if start <= index < start + size:
                keep[index - start] = False
        masks.append(pa.array(keep, pa.bool_()))
        start += size
    return drop_rows(table, staged, masks, rewrite, {**snapshot_properties, "agentlake.audit.dropped-rows": str(len(bad))})


# --- fact tables --------------------------------------------------------------------------------


def audit_fact_batch(
    table: Table,
    day: str,
    segments: list[SegmentInfo],
    files: list[DataFile],
    batch_runs: pl.Series,
    agent_runs: Table,
    *,
    run_id: str,
    snapshot_properties: dict[str, str],
    store: ObjectStore | None = None,
    signing_key: SecretStr | None = None,
) -> GateOutcome | None:
    """Audit a fact table's batch (written, not committed: readers cannot see it) before its commit.

    Returns:
        None if the batch may be committed; otherwise the outcome of holding it: its files are
        committed to a staging branch for inspection and its segments recorded as held, so the
        table's ledger does not take them and the next facts run tries them again. With a
        ``store``, the held batch's validation result and Data Docs page are kept there.
    """
    from agentlake.gate.suites import fact_audit_frame, facts_suite
    from agentlake.tables.files import one_of

    name = ".".join(table.name())
    suite = facts_suite(name)
    parts = read_files(table, files)
    rows = pa.concat_tables(parts) if parts else None
    if rows is None or rows.num_rows == 0:
        return None
    ids = pl.Series("run_id", rows.column("run_id").combine_chunks()).cast(pl.String)
    known = batch_runs.cast(pl.String)
    missing = ids.filter(~ids.is_in(known.implode())).unique().to_list()
    if missing and agent_runs.current_snapshot() is not None:
        found = agent_runs.scan(row_filter=one_of("run_id", missing), selected_fields=("run_id",)).to_arrow()
        known = pl.concat([known, pl.Series("run_id", found.column("run_id").combine_chunks()).cast(pl.String)])
    audit = validate(suite, fact_audit_frame(name, rows, known))
    if audit.passed:
        return None
    staged = stage(table, files, branch_name(run_id, day), {**snapshot_properties, "agentlake.staged": "true"})
    outcome = GateOutcome(name, staged.branch, staged.snapshot_id, audit, held=True)
    outcome.validation = _keep(store, outcome, run_id, signing_key)
    hold(table, day, staged, sorted(s.key for s in segments), _held_record(outcome, run_id, rows.num_rows))
    return outcome
