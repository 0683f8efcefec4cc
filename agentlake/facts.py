"""Fact tables derived from ``raw.events`` rows: pure functions over polars frames.

The incremental path (new segments as they arrive) and the rebuild path (a backfill of one
arrival day from ``raw.events``) call the same functions on the same rows, so their results
are identical. Each fact row keeps the lineage of the event it came from.
"""

from __future__ import annotations

import polars as pl

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
    from agentlake.tables import EVENTS

    return pl.from_arrow(EVENTS.arrow_schema().empty_table())  # type: ignore[return-value]
