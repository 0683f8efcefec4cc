"""Exactly-once ingestion of log segments into ``raw.events`` and ``raw.quarantine``.

For one arrival day at a time:

1. Each table's ledger (table properties, see :mod:`agentlake.tables.ledger`) says which segments it
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
5. An object store that keeps failing past its clients' retries (5xx, SlowDown, timeouts,
   resets) only delays the day: the attempt is started again with backoff, from the ledgers,
   for up to ``AGENTLAKE_STORE_RETRY_S`` (see :mod:`agentlake.storage.retry`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from agentlake.errors import BadSegment, SegmentMismatch
from agentlake.log.events import EVENT_ARROW_SCHEMA
from agentlake.log.parse import parse_run
from agentlake.log.reader import ReadAhead
from agentlake.log.segments import SegmentInfo
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.storage.retry import StageRetry, retrying
from agentlake.tables.files import (
    Checkpoint,
    commit,
    day_bounds,
    one_of,
    read_rows,
    release_memory,
    summary,
    write_files,
)
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import DayLedger, LedgerCorrupt, read_ledger
from agentlake.tables.quarantine import Verdict, quarantine_lines, quarantine_row, quarantine_rows
from agentlake.tables.schemas import EVENTS, QUARANTINE
from agentlake.tables.window import BatchIds, IdWindow

# Rows gathered before a data file is written: small segments share a file.
FILE_TARGET_BYTES = 16 * 1024 * 1024
READ_AHEAD_SEGMENTS = 4
_CONTENT_TYPES = dict(pl.from_arrow(EVENT_ARROW_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]
_DOCUMENTS = list(_CONTENT_TYPES).index("documents")


def ingest(lake: Lake, segments: Iterable[SegmentInfo], options: IngestOptions | None = None) -> IngestReport:
    """Make sure every table holds these segments exactly once.

    Raises:
        StageAborted: commits kept conflicting with other writers; running again is safe.
        StoreUnavailable: the object store kept failing for ``AGENTLAKE_STORE_RETRY_S``; running
            again is safe.
    """
    options = options or IngestOptions()
    started = time.perf_counter()
    by_day: dict[str, list[SegmentInfo]] = {}
    for seg in segments:
        by_day.setdefault(seg.dt, []).append(seg)
    report = IngestReport()
    for day in sorted(by_day):
        for batch in _gate_batches(lake, day, sorted(by_day[day]), options):
            report.merge(_ingest_day(lake, day, batch, options))
    report.seconds = time.perf_counter() - started
    return report


def log_segments(lake: Lake, day: str | None = None) -> list[SegmentInfo]:
    """Every segment in the log, or of one arrival day, listed through the store's retries."""
    return retrying(lake.settings, "listing the log", lambda: lake.log.list_day(day) if day else lake.log.list_all())


def ingest_pending(lake: Lake, options: IngestOptions | None = None, day: str | None = None) -> IngestReport:
    """Ingest every segment in the log (or of one arrival day) that a table does not hold yet."""
    return ingest(lake, log_segments(lake, day), options)


@dataclass
class _Batch:
    """Everything one attempt at a day computes before committing."""

    day: str
    events_todo: list[SegmentInfo]
    quarantine_todo: list[SegmentInfo]
    event_files: list[DataFile] = field(default_factory=list)
    quarantine_rows: list[pa.Table] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per segment key
    conflicts: list[tuple[SegmentInfo, int, str]] = field(default_factory=list)  # (segment, offset, event_id)
    report: IngestReport = field(default_factory=IngestReport)
    window: IdWindow | None = None  # the event ids raw.events held in the dedup window when read
    orphans: list[pl.DataFrame] = field(default_factory=list)  # rows a row rule kept off raw.events earlier
    # Segments held as a whole, that raw.events / raw.quarantine do not record as such yet: (segment, reason).
    bad_events: list[tuple[SegmentInfo, str]] = field(default_factory=list)
    bad_quarantine: list[tuple[SegmentInfo, str]] = field(default_factory=list)


def _ingest_day(lake: Lake, day: str, segments: list[SegmentInfo], options: IngestOptions) -> IngestReport:
    committed = IngestReport()  # what earlier attempts committed before a later one failed
    bad: dict[str, str] = {}  # segments found bad in this stage: held as a whole, the rest goes on
    attempts = store_retries = 0
    while True:
        retry = StageRetry(f"ingesting arrival day {day}", lake.settings, policy=options.retry)

        def attempt(retry: StageRetry = retry) -> IngestReport:
            before = dict(committed.snapshots)
            try:
                return _attempt_day(lake, day, segments, options, committed, bad)
            finally:
                # Nothing of a failed attempt is visible (each commit is atomic) and the next one reads
                # the ledgers again, so it only does what is still missing; a commit that landed is progress.
                if committed.snapshots != before:
                    retry.progressed()

        try:
            report = retry.run(attempt)
            break
        except BadSegment as exc:
            # One bad object never stops the log: held as a whole, and the day is ingested without it.
            if exc.key is None or exc.key in bad or exc.key not in {s.key for s in segments}:
                raise
            bad[exc.key] = str(exc)
        finally:
            attempts += retry.attempts
            store_retries += retry.store_retries
    for name in ("rows", "duplicates", "quarantined", "conflicts", "segments_bad"):
        setattr(report, name, getattr(committed, name))
    report.snapshots = dict(committed.snapshots)
    report.attempts = attempts
    report.store_retries = store_retries
    return report


def _attempt_day(
    lake: Lake, day: str, segments: list[SegmentInfo], options: IngestOptions, committed: IngestReport,
    bad: dict[str, str],
) -> IngestReport:
    check = options.checkpoint or (lambda _stage: None)
    events, quarantine = lake.table(EVENTS.name), lake.table(QUARANTINE.name)
    events_ledger = read_ledger(events.properties, day)
    quarantine_ledger = read_ledger(quarantine.properties, day)
    _hold_forged_copies(lake, day, segments, (events_ledger, quarantine_ledger), bad)
    events_hold = {s.key: _holds(events_ledger, s, bad) for s in segments}
    quarantine_hold = {s.key: _holds(quarantine_ledger, s, bad) for s in segments}
    batch = _Batch(
        day=day,
        events_todo=[s for s in segments if not events_hold[s.key] and s.key not in bad],
        quarantine_todo=[s for s in segments if not quarantine_hold[s.key] and s.key not in bad],
        bad_events=[(s, bad[s.key]) for s in segments if s.key in bad and s.key not in events_ledger.bad],
        bad_quarantine=[(s, bad[s.key]) for s in segments if s.key in bad and s.key not in quarantine_ledger.bad],
    )
    batch.quarantine_rows += [quarantine_row(s, -1, b"", Verdict("bad_segment", reason), options.run_id)
                              for s, reason in batch.bad_quarantine]
    report = batch.report
    work = sorted(set(batch.events_todo) | set(batch.quarantine_todo))
    report.segments_skipped = len(segments) - len(work)
    if work:
        _read_segments(lake, events, batch, work, options)
    check("after-data-files")
    partition = options.partition or day
    if batch.events_todo and options.quality is not None:
        _gate(lake, events, events_ledger, batch, options, committed, check)
    elif batch.events_todo or batch.bad_events:
        committed.snapshots[EVENTS.name] = commit(
            events, batch.event_files, _updated_ledger(events_ledger, batch.events_todo, batch),
            summary(batch.events_todo, run_id=options.run_id, dagster_run_id=options.dagster_run_id, partition=partition,
                    extra={"agentlake.rows-added": report.rows, "agentlake.duplicates": report.duplicates}),
            check,
        )
        committed.rows += report.rows
        committed.duplicates += report.duplicates
    if batch.orphans:
        _quarantine_orphans(lake, batch, options)
    # A gated batch records its bad segments with its own ledger when it publishes; while it is held,
    # raw.quarantine already records them, so they are named, and read again only by that batch.
    if batch.quarantine_todo or batch.bad_quarantine:
        files = write_files(quarantine, QUARANTINE, batch.quarantine_rows)
        committed.snapshots[QUARANTINE.name] = commit(
            quarantine, files, _updated_ledger(quarantine_ledger, batch.quarantine_todo, batch, quarantine=True),
            summary(batch.quarantine_todo, run_id=options.run_id, dagster_run_id=options.dagster_run_id, partition=partition,
                    extra={"agentlake.rows-added": report.quarantined}),
            check,
        )
        committed.quarantined += report.quarantined
        committed.conflicts += report.conflicts
        committed.segments_bad += len(batch.bad_quarantine)
    return report


def _hold_forged_copies(lake: Lake, day: str, segments: list[SegmentInfo], ledgers: tuple[DayLedger, ...],
                        bad: dict[str, str]) -> None:
    """With a signing key, find the forged copies of a sequence range before the ledgers are asked.

    A forged segment that reuses an honest producer id and an ingested sequence range would count as
    already held and never be read. Honest producers never share a range (each writer's id carries a
    nonce), so only a copy makes two listed segments of one producer claim the same numbers: those are
    checked, the key first (no signature: no request), then the bytes against the signature. One that
    fails is bad, unless the tables hold its rows under its own key (an unsigned segment ingested before
    the key was set). An honest log has no such pair, and this costs it nothing; a segment no other
    contests is checked when it is read, as before.
    """
    if lake.settings.signing_key is None:
        return
    recorded = {key for ledger in ledgers for key in ledger.bad}
    listed = [s for s in segments if s.key not in bad and s.key not in recorded]
    by_producer: dict[str, list[SegmentInfo]] = {}
    for seg in listed:
        by_producer.setdefault(seg.producer, []).append(seg)
    failed: dict[str, str] = {}
    for seg in listed:
        if not any(other.key != seg.key and other.first_seq <= seg.last_seq and seg.first_seq <= other.last_seq
                   for other in by_producer[seg.producer]):
            continue
        try:
            lake.log.verify_signature(seg, read=True)
        except BadSegment as exc:
            failed[seg.key] = str(exc)
    if failed:
        ingested = _keys_in_tables(lake, day, list(failed))
        bad.update({key: reason for key, reason in failed.items() if key not in ingested})


def _keys_in_tables(lake: Lake, day: str, keys: list[str]) -> set[str]:
    """Which of ``keys`` raw.events or raw.quarantine hold rows of (read only for contested segments)."""
    found: set[str] = set()
    for name in (EVENTS.name, QUARANTINE.name):
        table = lake.table(name)
        if table.current_snapshot() is not None:
            rows = table.scan(row_filter=And(day_bounds(day), one_of("segment_key", keys)),
                              selected_fields=("segment_key",)).to_arrow()
            found.update(rows.column("segment_key").to_pylist())
    return found


def _holds(ledger: DayLedger, seg: SegmentInfo, bad: dict[str, str]) -> bool:
    """Whether the ledger holds ``seg``; a segment claiming sequence numbers another holds is bad, not fatal."""
    try:
        return ledger.holds(seg)
    except LedgerCorrupt as exc:
        bad.setdefault(seg.key, str(exc))
        return False


def _read_segments(lake: Lake, events: Table, batch: _Batch, work: list[SegmentInfo], options: IngestOptions) -> None:
    """Parse, deduplicate and write data files for the segments of one day."""
    report = batch.report
    events_todo = {s.key for s in batch.events_todo}
    window = batch.window = IdWindow(events, dedup_window(batch.day, options.dedup_window_days))
    seen = BatchIds()  # (event_id, content hash) of the rows kept so far, looked up by id hash
    writer = _FileWriter(events)
    held_back: list[pl.DataFrame] = []  # rows whose id the table may hold already: compared at the end

    def keep(fresh: pl.DataFrame, seg: SegmentInfo) -> None:
        fresh = _dedup_in_batch(fresh, seen, seg, batch, options)
        if seg.key in events_todo and fresh.height:
            writer.submit(fresh.drop("_hash").to_arrow())
            batch.counts[seg.key]["rows"] += fresh.height
        elif fresh.height and options.quality is not None:
            batch.orphans.append(fresh.drop("_hash"))

    # On S3 the next segments are read while this one is parsed: the store's latency overlaps.
    ahead = ReadAhead(lake.log, [s.key for s in work], depth=READ_AHEAD_SEGMENTS if lake.settings.s3 else 0)
    for seg in work:
        counts = batch.counts.setdefault(seg.key, {"rows": 0, "quarantined": 0, "duplicates": 0})
        report.segments += 1
        report.lines += seg.lines
        report.first_key = min(filter(None, (report.first_key, seg.key)))
        report.last_key = max(filter(None, (report.last_key, seg.key)))
        lines_read = 0
        for first, run in ahead.iter_chunks(seg.key, options.chunk_bytes):
            lines_read += run.count(b"\n")
            parsed = parse_run(run, first)
            report.fast_lines += parsed.fast_lines
            report.slow_lines += parsed.slow_lines
            if parsed.bad:
                batch.quarantine_rows.append(quarantine_rows(
                    seg, [(offset, line, Verdict(_rule(reason), reason)) for offset, line, reason in parsed.bad],
                    options.run_id))
            counts["quarantined"] += len(parsed.bad)
            rows = _with_lineage(pl.from_arrow(parsed.table()), seg, options)  # type: ignore[arg-type]
            rows = rows.with_columns(_content_hash())
            fresh, known = _split_known(rows, window)
            if known.height:
                held_back.append(known)
            keep(fresh, seg)
            del parsed, rows, fresh, known
            release_memory()
        if lines_read != seg.lines:
            ahead.close()
            raise SegmentMismatch(
                f"segment {seg.key!r} holds {lines_read} lines, its key says {seg.lines}: a segment must be what its "
                "key claims; it is held as a whole, its bytes stay in the log", seg.key)
    if held_back:
        # An id whose hash only matched another's is not in the table: its row is new after all.
        unknown = _resolve_known(events, batch, pl.concat(held_back), options)
        by_key = {s.key: s for s in work}
        for (key,), rows in unknown.group_by("segment_key", maintain_order=True):
            keep(rows, by_key[str(key)])
    batch.event_files += writer.finish()
    if batch.conflicts:
        _quarantine_conflicts(lake, batch, options)
    for key, counts in batch.counts.items():
        report.rows += counts["rows"] if key in events_todo else 0
        report.quarantined += counts["quarantined"]
        report.duplicates += counts["duplicates"] if key in events_todo else 0


class _FileWriter:
    """Writes data files on a background thread while the next chunk is parsed (both release the GIL).

    Rows of small segments are gathered into one file of up to ``FILE_TARGET_BYTES`` (fewer
    files, fewer object-store requests); at most two such files wait to be written, so memory
    stays bounded.
    """

    def __init__(self, table: Table) -> None:
        self._table = table
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentlake-write")
        self._pending: list[Future[list[DataFile]]] = []
        self._files: list[DataFile] = []
        self._gathered: list[pa.Table] = []
        self._gathered_bytes = 0

    def submit(self, rows: pa.Table) -> None:
        self._gathered.append(rows)
        self._gathered_bytes += rows.nbytes
        if self._gathered_bytes >= FILE_TARGET_BYTES:
            self._write_gathered()

    def _write_gathered(self) -> None:
        if not self._gathered:
            return
        while len(self._pending) >= 2:
            self._files += self._pending.pop(0).result()
        parts, self._gathered, self._gathered_bytes = self._gathered, [], 0
        self._pending.append(self._pool.submit(write_files, self._table, EVENTS, parts))

    def finish(self) -> list[DataFile]:
        try:
            self._write_gathered()
            for future in self._pending:
                self._files += future.result()
        finally:
            self._pool.shutdown(wait=True)
        return self._files


def _with_lineage(rows: pl.DataFrame, seg: SegmentInfo, options: IngestOptions) -> pl.DataFrame:
    return rows.with_columns(
        pl.lit(seg.key).alias("segment_key"),
        pl.lit(seg.producer).alias("producer"),
        (pl.col("line_offset") + seg.first_seq).alias("seq"),
        pl.lit(seg.arrival).dt.cast_time_unit("us").alias("arrival"),
        pl.lit(options.run_id).alias("ingest_run_id"),
    )


def _content_hash() -> pl.Expr:
    # Equal content, equal hash, whether the row was just parsed or read back from the table
    # (columns cast to one set of types first). Good enough within one process to tell a repeat
    # from a conflict; the hash is never stored, so it need not be stable across polars versions.
    # pyiceberg stores a null list as [] (apache/iceberg-python#3833): hash both as null.
    columns = [pl.col(c).cast(t) for c, t in _CONTENT_TYPES.items()]
    columns[_DOCUMENTS] = pl.when(pl.col("documents").list.len() > 0).then(columns[_DOCUMENTS]).alias("documents")
    return pl.struct(columns).hash(seed=7).alias("_hash")


def dedup_window(day: str, window_days: int) -> BooleanExpression:
    """The arrival days searched for repeats of ``day``'s events: ``window_days`` before and after it.

    After as well as before, so two adjacent days ingested out of order (a re-run, a backfill)
    still find each other's repeats.
    """
    later = (date.fromisoformat(day) + timedelta(days=window_days)).isoformat()
    return day_bounds(later, 2 * window_days)


def _split_known(rows: pl.DataFrame, window: IdWindow) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows whose id the window cannot hold, and those it may hold (compared at the end)."""
    if len(window) == 0:
        return rows, rows.clear()
    maybe = window.maybe(rows.get_column("event_id"))
    return rows.filter(~maybe), rows.filter(maybe)


def _dedup_in_batch(
    rows: pl.DataFrame, seen: BatchIds, seg: SegmentInfo, batch: _Batch, options: IngestOptions
) -> pl.DataFrame:
    """Keep the first row of each id in the batch; count identical repeats, quarantine conflicting ones.

    ``seen`` holds ``(event_id, _hash)`` of the rows kept so far in this batch; it grows by the rows kept.
    Only the kept rows whose id shares a hash with one of this chunk's are compared by id.
    """
    if rows.height == 0:
        return rows
    rows = rows.with_row_index("_i")
    first = rows.unique(subset="event_id", keep="first", maintain_order=True)
    id_hashes = seen.hashes(first.get_column("event_id"))
    earlier = seen.kept_like(id_hashes)  # kept in an earlier chunk, or sharing a hash with one that was
    if earlier is None:
        kept, kept_hashes = first, id_hashes
    else:
        new = ~first.get_column("event_id").is_in(earlier.get_column("event_id")).fill_null(False).to_numpy()
        kept, kept_hashes = first.filter(pl.Series(new)), id_hashes[new]
    # Rows whose id was kept before (earlier in this chunk, or in an earlier chunk of the batch).
    others = rows.join(kept.select("_i"), on="_i", how="anti")
    if others.height:
        reference = kept.select("event_id", "_hash")
        if earlier is not None:
            reference = pl.concat([earlier, reference])
        judged = others.join(reference.rename({"_hash": "_first_hash"}), on="event_id", how="left")
        repeats = judged.filter(pl.col("_hash") == pl.col("_first_hash"))
        batch.counts[seg.key]["duplicates"] += repeats.height
        for row in judged.filter(pl.col("_hash") != pl.col("_first_hash")).iter_rows(named=True):
            _conflict(batch, seg, row, options)
    seen.add(kept.select("event_id", "_hash"), kept_hashes)
    return kept.drop("_i")


def _resolve_known(events: Table, batch: _Batch, known: pl.DataFrame, options: IngestOptions) -> pl.DataFrame:
    """Rows whose id ``raw.events`` may hold: identical repeats are counted, others quarantined.

    Returns the rows whose id it does not hold after all (their id's hash matched another's).
    """
    ids = known.get_column("event_id").unique().to_list()
    existing = read_rows(events, EVENTS, And(dedup_window(batch.day, options.dedup_window_days), one_of("event_id", ids)))
    stored = dict(zip(existing.get_column("event_id").to_list(),
                      existing.with_columns(_content_hash()).get_column("_hash").to_list(), strict=True))
    held = known.get_column("event_id").is_in(pl.Series(list(stored), dtype=pl.String))
    unknown, known = known.filter(~held), known.filter(held)
    by_key = {s.key: s for s in batch.events_todo + batch.quarantine_todo}
    for row in known.iter_rows(named=True):
        seg = by_key[row["segment_key"]]
        if stored.get(row["event_id"]) == row["_hash"]:
            batch.counts[seg.key]["duplicates"] += 1
        else:
            _conflict(batch, seg, row, options)
    return unknown


def _conflict(batch: _Batch, seg: SegmentInfo, row: dict[str, Any], options: IngestOptions) -> None:
    """Note a conflicting repeat; its original line is read back from the log at the end of the batch."""
    batch.conflicts.append((seg, row["line_offset"], row["event_id"]))
    batch.counts[seg.key]["quarantined"] += 1
    batch.report.conflicts += 1


def _quarantine_conflicts(lake: Lake, batch: _Batch, options: IngestOptions) -> None:
    """Quarantine each conflicting repeat with its line exactly as it is in the log (conflicts are rare)."""
    segments = {seg.key: seg for seg, _, _ in batch.conflicts}
    lines = [(seg.key, offset, Verdict("conflict", f"event_id {event_id!r} was already ingested with different "
                                       "content; the first one stays", event_id))
             for seg, offset, event_id in batch.conflicts]
    batch.quarantine_rows += quarantine_lines(lake.log, segments, lines, options.run_id)


def _rule(reason: str) -> str:
    return "parse" if reason.startswith(("not valid JSON", "blank line")) else "schema"


def _updated_ledger(
    ledger: DayLedger, segments: list[SegmentInfo], batch: _Batch, *, quarantine: bool = False
) -> DayLedger:
    """The ledger with these segments added; raw.quarantine's counts only what it holds itself."""
    updated = ledger.copy()
    for seg in segments:
        counts = batch.counts[seg.key]
        if quarantine:
            updated.add(seg, quarantined=counts["quarantined"])
        else:
            updated.add(seg, rows=counts["rows"], quarantined=counts["quarantined"], duplicates=counts["duplicates"])
    for seg, reason in batch.bad_quarantine if quarantine else batch.bad_events:
        if seg.key not in updated.bad:
            updated.add_bad(seg, reason)
            if quarantine:
                updated.quarantined += 1  # its one row in raw.quarantine: the segment's key and the reason
    return updated


# --- the quality gate (write-audit-publish, see agentlake.gate) ------------------------------------


def _gate_batches(lake: Lake, day: str, segments: list[SegmentInfo], options: IngestOptions) -> list[list[SegmentInfo]]:
    """Segments held back by an earlier audit are retried after the others, each as a batch of its
    own: one that still fails never holds back new segments, nor the good segments it was held with."""
    if options.quality is None:
        return [segments]
    from agentlake.gate.publish import held
    from agentlake.gate.suites import warm_up

    warm_up()  # Great Expectations' import (seconds) overlaps reading the segments

    # Through the store's retries, as every read of a stage: this can be the lake's first read of its tables.
    was_held = retrying(lake.settings, f"reading the held batches of arrival day {day}",
                        lambda: held(lake.table(EVENTS.name).properties, day))
    fresh = [s for s in segments if s.key not in was_held]
    retried = [s for s in segments if s.key in was_held]
    return ([fresh] if fresh else []) + [[s] for s in retried]


def _gate(
    lake: Lake, events: Table, ledger: DayLedger, batch: _Batch, options: IngestOptions, committed: IngestReport,
    check: Checkpoint,
) -> None:
    """Stage, audit and publish (or hold) the batch's raw.events rows; bad rows join the quarantine."""
    from agentlake.gate.batch import gate_events

    assert options.quality is not None
    report = batch.report
    before = {k: dict(v) for k, v in batch.counts.items()}
    outcome = gate_events(
        events, batch.day, batch.events_todo, batch.event_files, batch.counts,
        batch.window if batch.window is not None else IdWindow(),
        policy=options.quality, run_id=options.run_id,
        snapshot_properties=summary(batch.events_todo, run_id=options.run_id, dagster_run_id=options.dagster_run_id, partition=options.partition or batch.day,
                                    extra={"agentlake.duplicates": report.duplicates}),
        make_ledger=lambda current: _updated_ledger(current, batch.events_todo, batch),
        check=check, rewrite=lambda parts: write_files(events, EVENTS, parts), override=options.override,
        store=lake.store, signing_key=lake.settings.signing_key,
    )
    report.gate.append(outcome)
    if outcome.held:
        # Nothing of a held batch publishes: its quarantined lines wait with it.
        keys = {s.key for s in batch.events_todo}
        report.segments_held += len(keys)
        report.lines_held += sum(s.lines for s in batch.events_todo)
        report.rows -= sum(before[k]["rows"] for k in keys)
        report.duplicates -= sum(before[k]["duplicates"] for k in keys)
        report.quarantined -= sum(before[k]["quarantined"] for k in keys if k in {s.key for s in batch.quarantine_todo})
        batch.quarantine_todo = [s for s in batch.quarantine_todo if s.key not in keys]
        batch.quarantine_rows = [r for r in batch.quarantine_rows if r.column("segment_key")[0].as_py() not in keys]
        return
    assert outcome.published_snapshot_id is not None
    committed.snapshots[EVENTS.name] = outcome.published_snapshot_id
    if outcome.bad_rows:
        by_key = {s.key: s for s in batch.events_todo}
        lines = [(b.segment_key, b.line_offset, Verdict(b.rules[0], b.reason, b.event_id))
                 for b in sorted(outcome.bad_rows, key=lambda b: b.segment_key)]
        batch.quarantine_rows += quarantine_lines(lake.log, by_key, lines, options.run_id)
        report.rows -= len(outcome.bad_rows)
        report.quarantined += len(outcome.bad_rows)
        report.rules_quarantined += len(outcome.bad_rows)
    committed.rows += report.rows
    committed.duplicates += report.duplicates


def _quarantine_orphans(lake: Lake, batch: _Batch, options: IngestOptions) -> None:
    """Rows of segments raw.events already holds that are not in it: an earlier run's audit quarantined
    them by a row rule, and a crash came before raw.quarantine's commit. Find their rules again."""
    from agentlake.gate.suites import describe_failure, event_audit_frame, events_suite, validate

    assert options.quality is not None
    rows = pl.concat(batch.orphans).to_arrow()
    suite = events_suite(options.quality, expected_rows=rows.num_rows)
    audit = validate(suite, event_audit_frame(rows, pl.Series("event_id", [], dtype=pl.String)))
    keys, offsets, ids = (rows.column(c).to_pylist() for c in ("segment_key", "line_offset", "event_id"))
    by_key = {s.key: s for s in batch.quarantine_todo}
    lines = [(keys[i], offsets[i], Verdict(rules[0], describe_failure(rules, suite), ids[i]))
             for i, rules in sorted(audit.bad_rows.items(), key=lambda item: keys[item[0]]) if keys[i] in by_key]
    quarantined = quarantine_lines(lake.log, by_key, lines, options.run_id)
    for row in quarantined:
        batch.counts[row.column("segment_key")[0].as_py()]["quarantined"] += 1
    batch.report.quarantined += len(quarantined)
    batch.quarantine_rows += quarantined
