"""Reconciliation: for each arrival day, every line in the log is a row, a quarantined line or a duplicate.

With a signing key set it also names the day's records that do not prove they are AgentLake's: the
publish audit records of the day and the validation results its held batches point at. A day with
one is not balanced: someone else wrote in AgentLake's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agentlake.errors import ObjectNotFound, UntrustedRecord
from agentlake.gate.publish import audit_record_days, untrusted_audit_records
from agentlake.gate.publish import held as held_segments
from agentlake.gate.validations import read_validation_at
from agentlake.log.segments import SegmentInfo
from agentlake.storage.retry import retrying
from agentlake.tables.files import day_bounds
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import DayLedger, LedgerCorrupt, ledger_days, read_ledger
from agentlake.tables.schemas import EVENTS, QUARANTINE
from agentlake.tables.verify import verify_files


@dataclass
class DayReconciliation:
    """One arrival day: the log's lines against what the tables hold."""

    day: str
    segments_in_log: int = 0
    lines_in_log: int = 0
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0
    segments_missing: list[str] = field(default_factory=list)
    segments_pending: int = 0
    lines_pending: int = 0
    segments_held: int = 0  # held back by a failed audit: staged on a branch, not on main (agentlake.publish)
    lines_held: int = 0
    ledger_rows: int = 0
    ledger_quarantined: int = 0
    segments_bad: list[str] = field(default_factory=list)  # held as a whole: corrupt, truncated, lying, ...
    lines_bad: int = 0  # the lines their keys claim
    stray_objects: list[str] = field(default_factory=list)  # objects in the day's log folder that are no segment
    verified: bool = False  # the day's data files were read (``verify``), not only their metadata counts
    files_checked: int = 0
    file_problems: list[str] = field(default_factory=list)  # data files that are not what their manifests say
    # With a signing key: the day's audit records and validation results that AgentLake did not sign.
    untrusted_records: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """Every line of the log is a row, a quarantined line, a duplicate, pending or held; the ledgers agree."""
        return (
            self.lines_in_log - self.lines_pending - self.lines_bad
            == self.rows + self.quarantined - len(self.segments_bad) + self.duplicates + self.lines_held
            and self.rows == self.ledger_rows
            and self.quarantined == self.ledger_quarantined
        )

    @property
    def balanced(self) -> bool:
        """Every line of the segments the tables hold is a row, a quarantined line or a duplicate,
        no segment was skipped or held back, the ledgers agree with the tables and (when verified)
        every data file is what its manifest says.

        Segments that arrived after the newest one ingested are pending, not missing: the next
        ingest takes them. Segments whose batch failed its audit are held: accounted for, but not
        balanced until they are published or their batch is fixed.
        """
        return (self.accounted and not self.segments_missing and not self.segments_held and not self.file_problems
                and not self.segments_bad and not self.stray_objects and not self.untrusted_records)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "balanced": self.balanced}


def reconcile(lake: Lake, day: str | None = None, *, verify: bool = False) -> list[DayReconciliation]:
    """Reconcile one arrival day, or every day found in the log or the tables.

    Read-only, so read again from the start while the object store fails (see :mod:`agentlake.storage.retry`).

    Args:
        verify: also read every data file of the day (size and Parquet footer against its manifest);
            without it, rows are counted from the tables' metadata, which a deleted or rewritten file
            does not change.
    """
    return retrying(lake.settings, f"reconciling {day or 'every arrival day'}", lambda: _reconcile(lake, day, verify))


def _reconcile(lake: Lake, day: str | None, verify: bool) -> list[DayReconciliation]:
    events = lake.table(EVENTS.name)
    quarantine = lake.table(QUARANTINE.name)
    if day is not None:
        days = [day]
    else:
        days = sorted({s.dt for s in lake.log.list_all()} | set(ledger_days(events.properties))
                      | (set(audit_record_days(lake.store)) if lake.settings.signing_key is not None else set()))
    results = []
    for d in days:
        result = DayReconciliation(d)
        segments = lake.log.list_day(d)
        ledger = read_ledger(events.properties, d)
        qledger = read_ledger(quarantine.properties, d)
        result.segments_in_log = len(segments)
        result.lines_in_log = sum(s.lines for s in segments)
        in_tables = {s.key for s in segments if _holds(ledger, s) and _holds(qledger, s)}
        held = [s for s in segments if s.key in in_tables]
        newest_held = max((s.key for s in held), default="")
        held_back = held_segments(events.properties, d)
        not_held = [s for s in segments if s.key not in in_tables and s.key not in held_back]
        bad = {**ledger.bad, **qledger.bad}
        result.segments_bad = sorted(bad)
        result.lines_bad = sum(s.lines for s in segments if s.key in bad)
        result.stray_objects = [f"{key}: {reason}" for key, reason in lake.log.strays(d)]
        if lake.settings.signing_key is not None:
            result.untrusted_records = _untrusted_records(lake, d, held_back)
        result.segments_held = sum(1 for s in segments if s.key in held_back)
        result.lines_held = sum(s.lines for s in segments if s.key in held_back)
        # Not held and older than the newest segment held: skipped, a gap. Newer: still to come.
        result.segments_missing = [s.key for s in not_held if s.key < newest_held]
        pending = [s for s in not_held if s.key >= newest_held]
        result.segments_pending = len(pending)
        result.lines_pending = sum(s.lines for s in pending)
        result.rows = _count(events, d)
        result.quarantined = _count(quarantine, d)
        result.duplicates = ledger.duplicates
        result.ledger_rows = ledger.rows
        result.ledger_quarantined = qledger.quarantined
        if verify:
            result.verified = True
            for table in (events, quarantine):
                check = verify_files(table, partition_day=d)
                result.files_checked += check.files
                result.file_problems += check.problems
        results.append(result)
    return results


def _untrusted_records(lake: Lake, day: str, held_back: dict[str, dict[str, Any]]) -> list[str]:
    """The day's audit records and its held batches' validation results that AgentLake did not sign."""
    found = [f"{key}: {reason}" for key, reason in untrusted_audit_records(lake.store, lake.settings, day)]
    for key in sorted({v["validation_result"] for v in held_back.values() if v.get("validation_result")}):
        try:
            read_validation_at(lake.store, key, lake.settings)
        except UntrustedRecord as exc:
            found.append(str(exc))
        except ObjectNotFound:
            found.append(f"{key}: the validation result a held batch names is gone")
    return found


def _holds(ledger: DayLedger, seg: SegmentInfo) -> bool:
    try:
        return ledger.holds(seg)
    except LedgerCorrupt:
        return False  # it claims another segment's sequence numbers: ingest will hold it as a whole


def _count(table: Any, day: str) -> int:
    if table.current_snapshot() is None:
        return 0
    return int(table.scan(row_filter=day_bounds(day)).count())
