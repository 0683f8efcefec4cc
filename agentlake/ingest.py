"""Exactly-once ingestion of log segments into ``raw.events``, ``raw.quarantine`` and the facts.

For one arrival day at a time:

1. Each table's ledger (table properties, see :mod:`agentlake.ledger`) says which segments it
   already holds; only the others are read.
2. Segments are parsed (fast path for clean lines, per-line path for the rest). Bad lines go
   to quarantine with their reason. Events are deduplicated by ``event_id`` within the batch
   and against ``raw.events`` over the dedup window: an identical repeat is counted and
   dropped; the same id with other content is quarantined as a conflict, and the first stays.
3. Data files are written while reading, so memory stays bounded whatever the segment size.
4. Each table gets one commit holding the new files and its updated ledger, in one Iceberg
   transaction. pyiceberg's own commit retry is off (it would re-apply an append without
   re-checking the ledger): on a conflict AgentLake refreshes, re-checks and starts the day
   again. A crash at any point leaves every table either with a segment or without it; the
   re-run finishes what is missing, table by table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from agentlake import facts
from agentlake.events import FIELDS
from agentlake.lake import Lake
from agentlake.ledger import DayLedger, read_ledger
from agentlake.parse import parse_run
from agentlake.segments import SegmentInfo
from agentlake.tables import AGENT_RUNS, EVENTS, FACT_TABLES, QUARANTINE, TABLES_BY_NAME, TableDef, conform

DEFAULT_DEDUP_WINDOW_DAYS = 1
CONTENT_COLUMNS = [f.column for f in FIELDS]
MAX_KEYS_IN_SUMMARY = 100

# Test hook: called with a stage name at each step where a crash matters (kill tests).
Checkpoint = Callable[[str], None]


class IngestAborted(Exception):
    """Ingestion gave up after repeated commit conflicts; re-run it (nothing was lost or doubled)."""


@dataclass
class IngestOptions:
    """How to ingest: who is ingesting (stamped on every commit) and the dedup window."""

    run_id: str = field(default_factory=lambda: f"cli-{uuid.uuid4().hex[:12]}")
    partition: str | None = None
    dedup_window_days: int = DEFAULT_DEDUP_WINDOW_DAYS
    chunk_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 20
    checkpoint: Checkpoint | None = None


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
    seconds: float = 0.0

    def merge(self, other: IngestReport) -> None:
        for name in ("segments", "segments_skipped", "lines", "rows", "quarantined", "duplicates", "conflicts",
                     "fast_lines", "slow_lines", "attempts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        keys = [k for k in (self.first_key, other.first_key) if k]
        self.first_key = min(keys) if keys else None
        keys = [k for k in (self.last_key, other.last_key) if k]
        self.last_key = max(keys) if keys else None
        self.snapshots.update(other.snapshots)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def day_bounds(day: str, days_before: int = 0) -> BooleanExpression:
    """Rows whose arrival falls on ``day`` or the ``days_before`` days before it."""
    start = datetime.combine(date.fromisoformat(day) - timedelta(days=days_before), datetime.min.time(), UTC)
    end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), UTC)
    return And(_ge("arrival", start.isoformat()), _lt("arrival", end.isoformat()))


# pyiceberg's expression classes confuse type checkers; these are the only places they are built.
def _ge(column: str, value: Any) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg, arg-type]


def _lt(column: str, value: Any) -> BooleanExpression:
    return LessThan(column, value)  # type: ignore[call-arg, arg-type]


def one_of(column: str, values: Iterable[Any]) -> BooleanExpression:
    """Rows whose ``column`` is one of ``values``."""
    return In(column, list(values))  # type: ignore[call-arg, arg-type]


def ingest(lake: Lake, segments: Iterable[SegmentInfo], options: IngestOptions | None = None) -> IngestReport:
    """Make sure every table holds these segments exactly once.

    Raises:
        IngestAborted: commits kept conflicting with other writers; running again is safe.
    """
    options = options or IngestOptions()
    started = time.perf_counter()
    by_day: dict[str, list[SegmentInfo]] = {}
    for seg in segments:
        by_day.setdefault(seg.dt, []).append(seg)
    report = IngestReport()
    for day in sorted(by_day):
        report.merge(_ingest_day(lake, day, sorted(by_day[day]), options))
    report.seconds = time.perf_counter() - started
    return report


def ingest_pending(lake: Lake, options: IngestOptions | None = None, day: str | None = None) -> IngestReport:
    """Ingest every segment in the log (or of one arrival day) that a table does not hold yet."""
    segments = lake.log.list_day(day) if day else lake.log.list_all()
    return ingest(lake, segments, options)


@dataclass
class _Batch:
    """Everything one attempt at a day computes before committing."""

    day: str
    events_todo: list[SegmentInfo]
    quarantine_todo: list[SegmentInfo]
    facts_todo: dict[str, list[SegmentInfo]]
    event_files: list[DataFile] = field(default_factory=list)
    quarantine_rows: list[pa.Table] = field(default_factory=list)
    fact_files: dict[str, list[DataFile]] = field(default_factory=dict)
    fact_counts: dict[str, int] = field(default_factory=dict)
    partials: list[pl.DataFrame] = field(default_factory=list)
    finished: list[pl.DataFrame] = field(default_factory=list)
    at_hand: set[str] = field(default_factory=set)  # segments whose rows are in the partials
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per segment key
    report: IngestReport = field(default_factory=IngestReport)


def _ingest_day(lake: Lake, day: str, segments: list[SegmentInfo], options: IngestOptions) -> IngestReport:
    for attempt in range(1, options.max_attempts + 1):
        try:
            report = _attempt_day(lake, day, segments, options)
            report.attempts = attempt
            return report
        except CommitFailedException:
            # Another writer committed first: start the day again from fresh table state.
            time.sleep(min(2.0, 0.05 * attempt))
    raise IngestAborted(
        f"ingesting arrival day {day} conflicted with other writers {options.max_attempts} times; run it again"
    )


def _attempt_day(lake: Lake, day: str, segments: list[SegmentInfo], options: IngestOptions) -> IngestReport:
    check = options.checkpoint or (lambda _stage: None)
    tables = {t.name: lake.table(t.name) for t in (EVENTS, QUARANTINE, *FACT_TABLES)}
    ledgers = {name: read_ledger(table.properties, day) for name, table in tables.items()}
    batch = _Batch(
        day=day,
        events_todo=[s for s in segments if not ledgers[EVENTS.name].holds(s)],
        quarantine_todo=[s for s in segments if not ledgers[QUARANTINE.name].holds(s)],
        facts_todo={t.name: [s for s in segments if not ledgers[t.name].holds(s)] for t in FACT_TABLES},
    )
    report = batch.report
    report.segments_skipped = sum(
        1 for s in segments
        if s not in batch.events_todo and s not in batch.quarantine_todo
        and all(s not in todo for todo in batch.facts_todo.values())
    )
    work = sorted(set(batch.events_todo) | set(batch.quarantine_todo))
    if work:
        _read_segments(lake, tables, batch, work, options)
    check("after-data-files")
    if batch.events_todo:
        report.snapshots[EVENTS.name] = _commit(
            tables[EVENTS.name], batch.event_files, _updated_ledger(ledgers[EVENTS.name], batch.events_todo, batch),
            _summary(batch.events_todo, options, day, batch), check,
        )
    if batch.quarantine_todo:
        data_files = _write_files(tables[QUARANTINE.name], QUARANTINE, batch.quarantine_rows)
        report.snapshots[QUARANTINE.name] = _commit(
            tables[QUARANTINE.name], data_files, _updated_ledger(ledgers[QUARANTINE.name], batch.quarantine_todo, batch),
            _summary(batch.quarantine_todo, options, day, batch), check,
        )
    _commit_facts(lake, tables, ledgers, batch, options, check)
    return report


def _read_segments(
    lake: Lake, tables: dict[str, Table], batch: _Batch, work: list[SegmentInfo], options: IngestOptions
) -> None:
    """Parse, deduplicate and write data files for the segments of one day."""
    report = batch.report
    events_todo = {s.key for s in batch.events_todo}
    facts_from_batch = {name for name, todo in batch.facts_todo.items() if todo}
    window = _window_ids(tables[EVENTS.name], batch.day, options.dedup_window_days)
    seen: dict[str, int] = {}  # event_id -> content hash, for ids first seen in this batch
    held_back: list[pl.DataFrame] = []  # rows whose id is already in the table: compared at the end
    for seg in work:
        counts = batch.counts.setdefault(seg.key, {"rows": 0, "quarantined": 0, "duplicates": 0})
        report.segments += 1
        report.lines += seg.lines
        report.first_key = min(filter(None, (report.first_key, seg.key)))
        report.last_key = max(filter(None, (report.last_key, seg.key)))
        for first, run in lake.log.iter_chunks(seg.key, options.chunk_bytes):
            parsed = parse_run(run, first)
            report.fast_lines += parsed.fast_lines
            report.slow_lines += parsed.slow_lines
            for offset, line, reason in parsed.bad:
                batch.quarantine_rows.append(_quarantine_row(seg, offset, line, _rule(reason), reason, None, options))
            counts["quarantined"] += len(parsed.bad)
            rows = _with_lineage(pl.from_arrow(parsed.table()), seg, options)  # type: ignore[arg-type]
            rows = rows.with_columns(_content_hash())
            fresh, known = _split_known(rows, window)
            held_back.append(known)
            fresh = _dedup_in_batch(fresh, seen, seg, batch, options)
            if seg.key in events_todo and fresh.height:
                batch.event_files += _write_files(tables[EVENTS.name], EVENTS, [fresh.drop("_hash").to_arrow()])
                counts["rows"] += fresh.height
                if facts_from_batch:
                    _derive_facts(tables, batch, fresh.drop("_hash"))
    if held_back:
        _resolve_known(tables[EVENTS.name], batch, pl.concat(held_back), options)
    if facts_from_batch:
        # Segments committed to raw.events by an earlier, interrupted run: read their rows back.
        resumed = sorted({s.key for todo in batch.facts_todo.values() for s in todo} - events_todo)
        if resumed:
            _derive_facts(tables, batch, _read_events(tables[EVENTS.name], batch.day, one_of("segment_key", resumed)))
    for key, counts in batch.counts.items():
        report.rows += counts["rows"] if key in events_todo else 0
        report.quarantined += counts["quarantined"]
        report.duplicates += counts["duplicates"] if key in events_todo else 0


def _with_lineage(rows: pl.DataFrame, seg: SegmentInfo, options: IngestOptions) -> pl.DataFrame:
    return rows.with_columns(
        pl.lit(seg.key).alias("segment_key"),
        pl.lit(seg.producer).alias("producer"),
        (pl.col("line_offset") + seg.first_seq).alias("seq"),
        pl.lit(seg.arrival).dt.cast_time_unit("us").alias("arrival"),
        pl.lit(options.run_id).alias("ingest_run_id"),
    )


def _content_hash() -> pl.Expr:
    # Equal content, equal hash: good enough within one process to tell a repeat from a conflict
    # (the hash is never stored, so it need not be stable across polars versions).
    return pl.struct(CONTENT_COLUMNS).hash(seed=7).alias("_hash")


def _window_ids(events: Table, day: str, window_days: int) -> pl.Series:
    """The event ids ``raw.events`` holds on ``day`` and the ``window_days`` days before it."""
    if events.current_snapshot() is None:
        return pl.Series("event_id", [], dtype=pl.String)
    ids = events.scan(row_filter=day_bounds(day, window_days), selected_fields=("event_id",)).to_arrow()
    return pl.Series("event_id", ids.column("event_id").combine_chunks()).cast(pl.String)


def _split_known(rows: pl.DataFrame, window: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    if window.len() == 0:
        return rows, rows.clear()
    known = rows.get_column("event_id").is_in(window)
    return rows.filter(~known), rows.filter(known)


def _dedup_in_batch(
    rows: pl.DataFrame, seen: dict[str, int], seg: SegmentInfo, batch: _Batch, options: IngestOptions
) -> pl.DataFrame:
    """Keep the first row of each id; count identical repeats, quarantine conflicting ones."""
    if rows.height == 0:
        return rows
    first = rows.with_row_index("_i").unique(subset="event_id", keep="first", maintain_order=True)
    repeats = rows.with_row_index("_i").join(first.select("_i"), on="_i", how="anti") if first.height < rows.height else None
    kept_ids = first.get_column("event_id").to_list()
    kept_hashes = first.get_column("_hash").to_list()
    earlier = [i for i, eid in enumerate(kept_ids) if eid in seen]
    keep_mask = [True] * len(kept_ids)
    counts = batch.counts[seg.key]
    for i in earlier:
        keep_mask[i] = False
        eid = kept_ids[i]
        if seen[eid] == kept_hashes[i]:
            counts["duplicates"] += 1
        else:
            _conflict(batch, seg, first.row(i, named=True), options)
    for eid, h, keep in zip(kept_ids, kept_hashes, keep_mask, strict=True):
        if keep:
            seen[eid] = h
    if repeats is not None:
        for row in repeats.iter_rows(named=True):
            if seen.get(row["event_id"]) == row["_hash"]:
                counts["duplicates"] += 1
            else:
                _conflict(batch, seg, row, options)
    kept = first.filter(pl.Series(keep_mask)).drop("_i")
    return kept


def _resolve_known(events: Table, batch: _Batch, known: pl.DataFrame, options: IngestOptions) -> None:
    """Rows whose id ``raw.events`` already holds: identical repeats are counted, others quarantined."""
    if known.height == 0:
        return
    ids = known.get_column("event_id").unique().to_list()
    existing = _read_events(events, batch.day, one_of("event_id", ids), window_days=options.dedup_window_days)
    stored = dict(zip(existing.get_column("event_id").to_list(),
                      existing.with_columns(_content_hash()).get_column("_hash").to_list(), strict=True))
    by_key = {s.key: s for s in batch.events_todo + batch.quarantine_todo}
    for row in known.iter_rows(named=True):
        seg = by_key[row["segment_key"]]
        if stored.get(row["event_id"]) == row["_hash"]:
            batch.counts[seg.key]["duplicates"] += 1
        else:
            _conflict(batch, seg, row, options)


def _conflict(batch: _Batch, seg: SegmentInfo, row: dict[str, Any], options: IngestOptions) -> None:
    reason = f"event_id {row['event_id']!r} was already ingested with different content; the first one stays"
    line = orjson.dumps({k: row[k] for k in CONTENT_COLUMNS if row.get(k) is not None}, default=str)
    batch.quarantine_rows.append(
        _quarantine_row(seg, row["line_offset"], line, "conflict", reason, row["event_id"], options)
    )
    batch.counts[seg.key]["quarantined"] += 1
    batch.report.conflicts += 1


def _rule(reason: str) -> str:
    return "parse" if reason.startswith(("not valid JSON", "blank line")) else "schema"


def _quarantine_row(
    seg: SegmentInfo, offset: int, line: bytes, rule: str, reason: str, event_id: str | None, options: IngestOptions
) -> pa.Table:
    return pa.table({
        "segment_key": [seg.key], "line_offset": [offset], "producer": [seg.producer],
        "seq": [seg.first_seq + offset], "arrival": pa.array([seg.arrival], pa.timestamp("us", tz="UTC")),
        "line": pa.array([line], pa.binary()), "rule": [rule], "reason": [reason], "event_id": [event_id],
        "ingest_run_id": [options.run_id],
    })


def _derive_facts(tables: dict[str, Table], batch: _Batch, rows: pl.DataFrame) -> None:
    todo = {name for name, segs in batch.facts_todo.items() if segs}
    keys = {name: {s.key for s in segs} for name, segs in batch.facts_todo.items()}
    for name, frame in facts.event_facts(rows).items():
        if name in todo:
            frame = frame.filter(pl.col("segment_key").is_in(list(keys[name])))
            if frame.height:
                batch.fact_files.setdefault(name, []).extend(
                    _write_files(tables[name], TABLES_BY_NAME[name], [frame.to_arrow()])
                )
                batch.fact_counts[name] = batch.fact_counts.get(name, 0) + frame.height
    if AGENT_RUNS.name in todo:
        mine = rows.filter(pl.col("segment_key").is_in(list(keys[AGENT_RUNS.name])))
        batch.partials.append(facts.run_partials(rows))
        batch.finished.append(facts.finished_runs(mine))
        batch.at_hand.update(rows.get_column("segment_key").unique().to_list())


def _commit_facts(
    lake: Lake, tables: dict[str, Table], ledgers: dict[str, DayLedger], batch: _Batch, options: IngestOptions,
    check: Checkpoint,
) -> None:
    for tdef in FACT_TABLES:
        todo = batch.facts_todo[tdef.name]
        if not todo:
            continue
        files = batch.fact_files.get(tdef.name, [])
        if tdef is AGENT_RUNS:
            runs = agent_runs_rows(tables[EVENTS.name], batch.day, batch.finished, batch.partials, batch.at_hand,
                                   options.dedup_window_days)
            files = _write_files(tables[tdef.name], tdef, [runs.to_arrow()]) if runs.height else []
            batch.fact_counts[tdef.name] = runs.height
        batch.report.snapshots[tdef.name] = _commit(
            tables[tdef.name], files, _updated_ledger(ledgers[tdef.name], todo, batch, facts_rows=True),
            _summary(todo, options, batch.day, batch, rows=batch.fact_counts.get(tdef.name, 0)), check,
        )


def agent_runs_rows(
    events: Table, day: str, finished: list[pl.DataFrame], partials: list[pl.DataFrame], at_hand: set[str],
    window_days: int,
) -> pl.DataFrame:
    """``facts.agent_runs`` rows for the runs that finished among the rows at hand.

    Runs that started before these rows get their earlier events from ``raw.events`` over the
    dedup window (the rows at hand excluded, so nothing counts twice).
    """
    done = pl.concat(finished) if finished else facts.finished_runs(facts._empty_events())
    merged = facts.merge_partials(partials)
    older = facts.runs_needing_history(done, merged)
    if older:
        history = _read_events(events, day, one_of("run_id", older), window_days=window_days)
        history = history.filter(~pl.col("segment_key").is_in(list(at_hand)))  # already in the partials
        merged = facts.merge_partials([merged, facts.run_partials(history)])
    return facts.agent_runs(done, merged)


def _read_events(events: Table, day: str, row_filter: BooleanExpression, window_days: int = 0) -> pl.DataFrame:
    if events.current_snapshot() is None:
        return pl.from_arrow(EVENTS.arrow_schema().empty_table())  # type: ignore[return-value]
    table = events.scan(row_filter=And(day_bounds(day, window_days), row_filter)).to_arrow()
    return pl.from_arrow(table)  # type: ignore[return-value]


def _write_files(table: Table, tdef: TableDef, parts: list[pa.Table]) -> list[DataFile]:
    """Write rows as Parquet data files of ``table`` (not yet committed: invisible to readers)."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return []
    data = conform(pa.concat_tables([conform(p, tdef) for p in parts]), tdef)
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=data, io=table.io))


def _updated_ledger(
    ledger: DayLedger, segments: list[SegmentInfo], batch: _Batch, *, facts_rows: bool = False
) -> DayLedger:
    updated = DayLedger.from_json(ledger.day, ledger.to_json())
    for seg in segments:
        counts = batch.counts.get(seg.key, {"rows": 0, "quarantined": 0, "duplicates": 0})
        if facts_rows:
            updated.add(seg)
        else:
            updated.add(seg, rows=counts["rows"], quarantined=counts["quarantined"], duplicates=counts["duplicates"])
    return updated


def _summary(
    segments: list[SegmentInfo], options: IngestOptions, day: str, batch: _Batch, rows: int | None = None
) -> dict[str, str]:
    keys = sorted(s.key for s in segments)
    props = {
        "agentlake.run-id": options.run_id,
        "agentlake.partition": options.partition or day,
        "agentlake.segment-count": str(len(keys)),
        "agentlake.segment-first": keys[0],
        "agentlake.segment-last": keys[-1],
    }
    if len(keys) <= MAX_KEYS_IN_SUMMARY:
        props["agentlake.segments"] = orjson.dumps(keys).decode()
    if rows is not None:
        props["agentlake.rows-added"] = str(rows)
    return props


def _commit(
    table: Table, data_files: list[DataFile], ledger: DayLedger, summary: dict[str, str], check: Checkpoint,
) -> int:
    """One transaction: the new data files and the table's updated ledger; returns the snapshot id.

    Raises:
        CommitFailedException: another writer committed first (the caller starts over).
    """
    check(f"before-commit:{table.name()[-1]}")
    with table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=summary).fast_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)
        tx.set_properties({ledger.property_name: ledger.to_json()})
    check(f"after-commit:{table.name()[-1]}")
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def rebuild_facts(lake: Lake, day: str, options: IngestOptions | None = None) -> IngestReport:
    """Rebuild every fact table's partition ``day`` from ``raw.events`` and replace it, one commit per table.

    The rows come from the same functions as the incremental path, so the result is identical
    to what incremental ingestion produced; each table's ledger for the day becomes that of
    ``raw.events``.
    """
    options = options or IngestOptions()
    started = time.perf_counter()
    for attempt in range(1, options.max_attempts + 1):
        try:
            report = _rebuild_once(lake, day, options)
            report.attempts = attempt
            report.seconds = time.perf_counter() - started
            return report
        except CommitFailedException:
            time.sleep(min(2.0, 0.05 * attempt))
    raise IngestAborted(f"rebuilding the facts of {day} conflicted {options.max_attempts} times; run it again")


def _rebuild_once(lake: Lake, day: str, options: IngestOptions) -> IngestReport:
    check = options.checkpoint or (lambda _stage: None)
    tables = {t.name: lake.table(t.name) for t in (EVENTS, *FACT_TABLES)}
    events_ledger = read_ledger(tables[EVENTS.name].properties, day)
    batch = _Batch(day=day, events_todo=[], quarantine_todo=[], facts_todo={t.name: [] for t in FACT_TABLES})
    # Every fact table must be rebuilt: mark all as to do, with a sentinel so _derive_facts keeps all rows.
    if tables[EVENTS.name].current_snapshot() is not None:
        reader = tables[EVENTS.name].scan(row_filter=day_bounds(day)).to_arrow_batch_reader()
        for record_batch in reader:
            rows = pl.from_arrow(pa.Table.from_batches([record_batch]))
            assert isinstance(rows, pl.DataFrame)
            for name, frame in facts.event_facts(rows).items():
                if frame.height:
                    batch.fact_files.setdefault(name, []).extend(
                        _write_files(tables[name], TABLES_BY_NAME[name], [frame.to_arrow()])
                    )
                    batch.fact_counts[name] = batch.fact_counts.get(name, 0) + frame.height
            batch.partials.append(facts.run_partials(rows))
            batch.finished.append(facts.finished_runs(rows))
            batch.at_hand.update(rows.get_column("segment_key").unique().to_list())
    check("after-data-files")
    runs = agent_runs_rows(tables[EVENTS.name], day, batch.finished, batch.partials, batch.at_hand,
                           options.dedup_window_days)
    batch.fact_files[AGENT_RUNS.name] = _write_files(tables[AGENT_RUNS.name], AGENT_RUNS, [runs.to_arrow()])
    batch.fact_counts[AGENT_RUNS.name] = runs.height
    ledger = DayLedger(day, producers=events_ledger.producers, segments=events_ledger.segments,
                       lines=events_ledger.lines)
    summary = {
        "agentlake.run-id": options.run_id,
        "agentlake.partition": options.partition or day,
        "agentlake.rebuild": day,
        "agentlake.segment-count": str(events_ledger.segments),
    }
    for tdef in FACT_TABLES:
        table = tables[tdef.name]
        check(f"before-commit:{tdef.name.split('.')[-1]}")
        with table.transaction() as tx:
            if table.current_snapshot() is not None:
                tx.delete(day_bounds(day), snapshot_properties=summary)
            with tx.update_snapshot(
                snapshot_properties={**summary, "agentlake.rows-added": str(batch.fact_counts.get(tdef.name, 0))}
            ).fast_append() as append:
                for data_file in batch.fact_files.get(tdef.name, []):
                    append.append_data_file(data_file)
            tx.set_properties({ledger.property_name: ledger.to_json()})
        check(f"after-commit:{tdef.name.split('.')[-1]}")
        snapshot = table.current_snapshot()
        assert snapshot is not None
        batch.report.snapshots[tdef.name] = snapshot.snapshot_id
    batch.report.rows = sum(batch.fact_counts.values())
    return batch.report


def iter_days(first: str, last: str) -> Iterator[str]:
    day = date.fromisoformat(first)
    while day <= date.fromisoformat(last):
        yield day.isoformat()
        day += timedelta(days=1)
