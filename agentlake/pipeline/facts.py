"""Fact tables derived from ``raw.events`` rows: pure functions over polars frames, and the stage.

The incremental path (new segments as they arrive) and the rebuild path (a backfill of one
arrival day from ``raw.events``) call the same functions on the same rows, so their results
are identical. Each fact row keeps the lineage of the event it came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import SecretStr
from pyiceberg.expressions import And
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.storage.retry import StageRetry
from agentlake.storage.store import ObjectStore
from agentlake.tables.files import commit, day_bounds, one_of, read_rows, summary, write_files
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import DayLedger, read_ledger
from agentlake.tables.schemas import AGENT_RUNS, EVENTS, FACT_TABLES, TABLES_BY_NAME

_KEYS = ["event_id", "run_id", "agent_id", "agent_version", "tenant", "ts", "span_id", "parent_span_id"]
_LINEAGE = ["segment_key", "line_offset", "arrival", "ingest_run_id"]
_NOT_STEPS = ["run_started", "run_finished", "feedback", "context_assembled"]


def event_facts(events: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The per-event facts of these ``raw.events`` rows, by fact table name."""
    of_type = {t: events.filter(pl.col("type") == t) for t in ("llm_call", "tool_call", "retrieval", "decision", "feedback")}
    llm = of_type["llm_call"].select(
        *_KEYS, "operation", "provider", "model", "input_tokens", "output_tokens", "finish_reason", "latency_ms",
        "status", "error_type", *_LINEAGE,
    )
    tools = of_type["tool_call"].select(
        *_KEYS, "tool_name", "tool_call_id", "latency_ms", "status", "error_type", *_LINEAGE
    )
    retrievals = (
        of_type["retrieval"]
        .select(*_KEYS, "retrieval_source", "documents", "latency_ms", *_LINEAGE)
        .filter(pl.col("documents").list.len() > 0)
        .with_columns(pl.int_ranges(0, pl.col("documents").list.len()).alias("document_rank"))
        .explode("documents", "document_rank")
        .with_columns(
            pl.col("documents").struct.field("id").alias("document_id"),
            pl.col("documents").struct.field("score").alias("score"),
        )
        .select(*_KEYS, "retrieval_source", "document_rank", "document_id", "score", "latency_ms", *_LINEAGE)
    )
    decisions = of_type["decision"].select(*_KEYS, "decision_label", "attributes", *_LINEAGE)
    feedback = of_type["feedback"].select(*_KEYS, "feedback_score", "feedback_label", *_LINEAGE)
    return {
        "facts.llm_calls": llm,
        "facts.tool_calls": tools,
        "facts.retrievals": retrievals,
        "facts.decisions": decisions,
        "facts.feedback": feedback,
    }


def run_partials(events: pl.DataFrame) -> pl.DataFrame:
    """Per run, aggregates of these events that merge with other batches' (see :func:`merge_partials`)."""
    step = ~pl.col("type").is_in(_NOT_STEPS)
    return (
        events.filter(pl.col("type") != "feedback")
        .group_by("run_id")
        .agg(
            pl.col("ts").filter(pl.col("type") == "run_started").min().alias("started_at"),
            pl.col("ts").min().alias("first_ts"),
            step.sum().cast(pl.Int64).alias("steps"),
            (pl.col("type") == "llm_call").sum().cast(pl.Int64).alias("llm_calls"),
            (pl.col("type") == "tool_call").sum().cast(pl.Int64).alias("tool_calls"),
            (pl.col("type") == "retrieval").sum().cast(pl.Int64).alias("retrievals"),
            pl.col("input_tokens").filter(pl.col("type") == "llm_call").sum().cast(pl.Int64).alias("input_tokens"),
            pl.col("output_tokens").filter(pl.col("type") == "llm_call").sum().cast(pl.Int64).alias("output_tokens"),
            ((pl.col("type") == "error") | (step & (pl.col("status") == "error")))
            .sum()
            .cast(pl.Int64)
            .alias("error_count"),
        )
    )


def merge_partials(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Combine partial aggregates of the same runs from several batches."""
    parts = [p for p in parts if p.height]
    if not parts:
        return run_partials(_empty_events())
    return (
        pl.concat(parts)
        .group_by("run_id")
        .agg(
            pl.col("started_at").min(),
            pl.col("first_ts").min(),
            *[pl.col(c).sum() for c in ("steps", "llm_calls", "tool_calls", "retrievals", "input_tokens",
                                        "output_tokens", "error_count")],
        )
    )


def finished_runs(events: pl.DataFrame) -> pl.DataFrame:
    """The ``run_finished`` events among these rows: one agent run each."""
    return events.filter(pl.col("type") == "run_finished").select(
        "run_id", "agent_id", "agent_version", "tenant", pl.col("ts").alias("ended_at"), "status", "latency_ms",
        *_LINEAGE,
    )


def agent_runs(finished: pl.DataFrame, partials: pl.DataFrame) -> pl.DataFrame:
    """One ``facts.agent_runs`` row per finished run, from its partial aggregates."""
    counts = ["steps", "llm_calls", "tool_calls", "retrievals", "input_tokens", "output_tokens", "error_count"]
    joined = finished.join(partials, on="run_id", how="left")
    started = pl.coalesce("started_at", "first_ts")
    return joined.select(
        "run_id",
        "agent_id",
        "agent_version",
        "tenant",
        started.alias("started_at"),
        "ended_at",
        "status",
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in counts[:4]],
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in counts[4:6]],
        pl.coalesce(
            "latency_ms", (pl.col("ended_at") - started).dt.total_microseconds().cast(pl.Float64) / 1000.0
        ).alias("latency_ms"),
        pl.col("error_count").fill_null(0).cast(pl.Int64),
        *_LINEAGE,
    )


def runs_needing_history(finished: pl.DataFrame, partials: pl.DataFrame) -> list[str]:
    """Finished runs whose start is not among the rows at hand: their earlier events must be read."""
    started = partials.filter(pl.col("started_at").is_not_null()).select("run_id")
    return finished.join(started, on="run_id", how="anti").get_column("run_id").unique().sort().to_list()


def _empty_events() -> pl.DataFrame:
    return pl.from_arrow(EVENTS.arrow_schema().empty_table())  # type: ignore[return-value]


# --- the facts stage ---------------------------------------------------------------------------


def update_facts(lake: Lake, day: str, options: IngestOptions | None = None) -> IngestReport:
    """Bring every fact table up to date with the segments ``raw.events`` holds for ``day``.

    Each fact table has its own ledger: the segments whose events it has derived. The rows of
    the segments it lacks are read back from ``raw.events`` (files are pruned by segment key),
    so an interrupted run is finished by the next one, table by table.
    """
    options = options or IngestOptions()
    return _with_retries(lambda: _update_once(lake, day, options, rebuild=False), lake, options, f"facts of {day}")


def rebuild_facts(lake: Lake, day: str, options: IngestOptions | None = None) -> IngestReport:
    """Rebuild every fact table's partition ``day`` from ``raw.events`` and replace it, one commit per table.

    The rows come from the same functions as the incremental path, so the result is identical
    to what incremental ingestion produced.
    """
    options = options or IngestOptions()
    return _with_retries(lambda: _update_once(lake, day, options, rebuild=True), lake, options, f"rebuild of {day}")


def _with_retries(attempt: Callable[[], IngestReport], lake: Lake, options: IngestOptions, what: str) -> IngestReport:
    """Run the stage until it commits: again on a commit conflict, and with backoff while the store fails."""
    started = time.perf_counter()
    retry = StageRetry(f"deriving the {what}", lake.settings, policy=options.retry)
    report = retry.run(attempt)
    report.attempts = retry.attempts
    report.store_retries = retry.store_retries
    report.seconds = time.perf_counter() - started
    return report


def _update_once(lake: Lake, day: str, options: IngestOptions, *, rebuild: bool) -> IngestReport:
    check = options.checkpoint or (lambda _stage: None)
    report = IngestReport()
    events = lake.table(EVENTS.name)
    held = read_ledger(events.properties, day)
    # Segments raw.events holds as a whole (bad) gave it no rows, and claim no range in a fact ledger.
    segments = [seg for seg in lake.log.list_day(day) if held.holds(seg) and seg.key not in held.bad]
    tables = {t.name: lake.table(t.name) for t in FACT_TABLES}
    ledgers = {name: read_ledger(t.properties, day) for name, t in tables.items()}
    todo = {name: segments if rebuild else [s for s in segments if not ledgers[name].holds(s)] for name in tables}
    keys = sorted({s.key for segs in todo.values() for s in segs})
    if not keys:
        return report
    source = one_of("segment_key", keys) if not rebuild else None
    files: dict[str, list[DataFile]] = {}
    counts: dict[str, int] = {}
    partials: list[pl.DataFrame] = []
    finished: list[pl.DataFrame] = []
    batch_runs: list[pl.Series] = []  # run ids of the raw.events rows read: the facts' referential check
    if events.current_snapshot() is not None:
        row_filter = day_bounds(day) if source is None else And(day_bounds(day), source)
        for record_batch in events.scan(row_filter=row_filter).to_arrow_batch_reader():
            rows = pl.from_arrow(pa.Table.from_batches([record_batch]))
            assert isinstance(rows, pl.DataFrame)
            for name, frame in event_facts(rows).items():
                mine = frame.filter(pl.col("segment_key").is_in([s.key for s in todo[name]]))
                if mine.height:
                    files.setdefault(name, []).extend(write_files(tables[name], TABLES_BY_NAME[name], [mine.to_arrow()]))
                    counts[name] = counts.get(name, 0) + mine.height
            partials.append(run_partials(rows))
            batch_runs.append(rows.get_column("run_id").unique())
            finished.append(finished_runs(rows.filter(pl.col("segment_key").is_in([s.key for s in todo[AGENT_RUNS.name]]))))
    check("after-data-files")
    runs = agent_runs_with_history(events, day, finished, partials, set(keys), options.dedup_window_days)
    files[AGENT_RUNS.name] = write_files(tables[AGENT_RUNS.name], AGENT_RUNS, [runs.to_arrow()])
    counts[AGENT_RUNS.name] = runs.height
    partition = options.partition or day
    for tdef in FACT_TABLES:
        segs = todo[tdef.name]
        if not segs:
            continue
        ledger = DayLedger(day) if rebuild else ledgers[tdef.name].copy()
        for seg in segs:
            ledger.add(seg)
        extra: dict[str, Any] = {"agentlake.rows-added": counts.get(tdef.name, 0)}
        if rebuild:
            extra["agentlake.rebuild"] = day
        if options.quality is not None and _held_by_audit(tables, tdef, day, segs, files.get(tdef.name, []),
                                                          batch_runs, options, report, lake.store,
                                                          lake.settings.signing_key):
            continue
        report.snapshots[tdef.name] = commit(
            tables[tdef.name], files.get(tdef.name, []), ledger,
            summary(segs, run_id=options.run_id, dagster_run_id=options.dagster_run_id, partition=partition, extra=extra), check,
            replace=day_bounds(day) if rebuild else None,
        )
    report.segments = len(keys)
    report.rows = sum(counts.values())
    return report


def _held_by_audit(
    tables: dict[str, Table], tdef: Any, day: str, segments: list[Any], files: list[DataFile],
    batch_runs: list[pl.Series], options: IngestOptions, report: IngestReport, store: ObjectStore,
    signing_key: SecretStr | None,
) -> bool:
    """Run the fact table's suite on its batch (agentlake.gate); True if the batch was held back."""
    from agentlake.gate.batch import audit_fact_batch

    outcome = audit_fact_batch(
        tables[tdef.name], day, segments, files,
        pl.concat(batch_runs) if batch_runs else pl.Series("run_id", [], dtype=pl.String),
        tables[AGENT_RUNS.name], run_id=options.run_id,
        snapshot_properties=summary(segments, run_id=options.run_id, dagster_run_id=options.dagster_run_id,
                                    partition=options.partition or day),
        store=store, signing_key=signing_key,
    )
    if outcome is None:
        return False
    report.segments_held += len(segments)
    report.lines_held += sum(s.lines for s in segments)
    report.gate.append(outcome)
    return True


def agent_runs_with_history(
    events: Table, day: str, finished: list[pl.DataFrame], partials: list[pl.DataFrame], at_hand: set[str],
    window_days: int,
) -> pl.DataFrame:
    """``facts.agent_runs`` rows for the runs that finished among the rows at hand.

    Runs that started before these rows get their earlier events from ``raw.events`` over the
    dedup window (the segments at hand excluded, so nothing counts twice).
    """
    done = pl.concat(finished) if finished else finished_runs(_empty_events())
    merged = merge_partials(partials)
    older = runs_needing_history(done, merged)
    if older:
        history = read_rows(events, EVENTS, And(day_bounds(day, window_days), one_of("run_id", older)))
        history = history.filter(~pl.col("segment_key").is_in(list(at_hand)))
        merged = merge_partials([merged, run_partials(history)])
    return agent_runs(done, merged)
