"""The evaluation tables (namespace ``eval``), and how a day's rows are replaced in one commit.

Each table is partitioned by the evaluated day. Evaluating a day again (after late feedback)
deletes that day's rows and appends the new ones in one transaction: one snapshot, so readers see
the old result or the new one, and the old one stays readable at its snapshot (as of its time).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
from pyiceberg.table import Table

from agentlake.storage.retry import DEFAULT_POLICY, RetryPolicy, StageRetry
from agentlake.tables.files import day_bounds, one_of, write_files
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import TableDef, ensure_tables

_PINNED = (
    ("pins", "json", True, "{table: snapshot_id} of every table the evaluation read"),
    ("evaluator_version", "string", True, "the evaluator that computed the row"),
    ("evaluated_at", "timestamp", True, "when the evaluation ran"),
    ("eval_run_id", "string", True, "the run (CLI or Dagster) that committed the row"),
)

EVAL_DECISIONS = TableDef(
    "eval.decisions",
    (
        ("day", "timestamp", True, "the arrival day of the decision (midnight UTC): the partition"),
        ("decision_event_id", "string", True, "the decision event evaluated"),
        ("run_id", "string", True, ""),
        ("agent_id", "string", True, ""),
        ("agent_version", "string", False, ""),
        ("tenant", "string", False, ""),
        ("decision_label", "string", False, ""),
        ("feedback_label", "string", False, "the run's latest feedback known to the evaluation, if any"),
        ("feedback_score", "float", False, ""),
        ("correct", "int", False, "1 when the feedback says helpful, 0 when not, null without feedback"),
        ("cost_usd", "float", True, "the run's LLM calls priced by the price table"),
        ("tokens", "json", True, "{model: {input, output}} of the run's LLM calls"),
        ("latency_ms", "float", False, "the run's latency"),
        ("tool_calls", "int", True, ""),
        ("tool_errors", "int", True, "tool calls whose status is error"),
        ("artifact_key", "string", False, "the context artifact the decision names"),
        ("replay_status", "string", False, "reproducible, differs, unreplayable or tampered (null: no artifact)"),
        ("records_hash", "string", False, "the artifact's recorded records hash"),
    ) + _PINNED,
    "One row per decision of a day: correctness against its feedback, cost, latency, tool errors, and whether "
    "its context artifact replays reproducibly.",
    partition_column="day",
)

EVAL_DAILY = TableDef(
    "eval.daily",
    (
        ("day", "timestamp", True, "the evaluated arrival day (midnight UTC): the partition"),
        ("agent_id", "string", True, ""),
        ("agent_version", "string", True, ""),
        ("decisions", "int", True, ""),
        ("judged", "int", True, "decisions with feedback"),
        ("decision_accuracy", "float", False, "correct / judged (null: none judged)"),
        ("artifacts_replayed", "int", True, ""),
        ("reproducible_rate", "float", False, "reproducible / artifacts replayed (null: none)"),
        ("cost_per_decision", "float", True, "USD"),
        ("latency_p50_ms", "float", False, ""),
        ("latency_p90_ms", "float", False, ""),
        ("latency_p99_ms", "float", False, ""),
        ("tool_error_rate", "float", False, "tool errors / tool calls (null: no tool call)"),
        ("artifact_keys", "json", True, "the artifacts of the day's decisions"),
    ) + _PINNED,
    "One row per day and agent version: accuracy, reproducibility, cost per decision, latency percentiles and "
    "tool error rate.",
    partition_column="day",
)

EVAL_COMPARISONS = TableDef(
    "eval.comparisons",
    (
        ("day", "timestamp", True, "the arrival day of the baseline's decisions (midnight UTC): the partition"),
        ("baseline", "string", True, "agent@version whose pinned contexts are re-decided"),
        ("candidate", "string", True, "agent@version run over them"),
        ("run_id", "string", True, "the baseline's run"),
        ("artifact_key", "string", True, "the baseline's context artifact: the shared input"),
        ("records_hash", "string", True, "the artifact's recorded records hash"),
        ("same_context", "int", True, "1 when the records both versions decided on hash to records_hash"),
        ("baseline_label", "string", False, "the baseline's decision as it was logged"),
        ("candidate_label", "string", False, "the candidate's decision on the same records"),
        ("differs", "int", True, "1 when the two labels differ"),
        ("baseline_correct", "int", False, "the baseline's correctness against its feedback, if judged"),
    ) + _PINNED,
    "One row per pair of a counterfactual comparison: the candidate re-run on the baseline's exact records.",
    partition_column="day",
)

EVAL_TABLES = (EVAL_DECISIONS, EVAL_DAILY, EVAL_COMPARISONS)


def day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def replace_day(lake: Lake, tdef: TableDef, day: str, rows: pa.Table, properties: dict[str, str], *,
                also: dict[str, str] | None = None, retry: RetryPolicy = DEFAULT_POLICY) -> int:
    """Replace ``day``'s rows of ``tdef`` by ``rows`` (and matching ``also`` column values) in one commit.

    Args:
        also: further equalities that bound what is replaced (a comparison replaces only its own pair of versions).

    Returns:
        The snapshot id of the commit.
    """
    from pyiceberg.expressions import And

    snapshot_id = 0

    def attempt() -> None:
        nonlocal snapshot_id
        table: Table = ensure_tables(lake.catalog, [tdef])[tdef.name]
        files = write_files(table, tdef, [rows]) if rows.num_rows else []
        bounds = day_bounds(day, column="day")
        for column, value in (also or {}).items():
            bounds = And(bounds, one_of(column, [value]))
        with table.transaction() as tx:
            if table.current_snapshot() is not None and table.scan(row_filter=bounds).count():
                tx.delete(bounds, snapshot_properties=properties)
            with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
                for data_file in files:
                    append.append_data_file(data_file)
        snapshot = table.current_snapshot()
        assert snapshot is not None
        snapshot_id = snapshot.snapshot_id

    StageRetry(f"writing {tdef.name} for {day}", policy=retry).run(attempt)
    return snapshot_id


def day_range(day: str) -> tuple[datetime, datetime]:
    start = day_start(day)
    return start, start + timedelta(days=1)
