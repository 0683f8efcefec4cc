"""Data-quality suites as code: one Great Expectations suite per table, run on exactly the rows a commit adds.

Each rule is a named Great Expectations expectation at one of two levels:

- **row**: a row that breaks it goes to ``raw.quarantine`` with the rule's name; the rest publish.
- **batch**: a batch that breaks it publishes nothing; its staged data stays on its branch.

Great Expectations has no polars data source, so the rows are converted to pandas at the edge,
with only the columns the suite reads plus a few derived ones (the lead of ``ts`` over the
segment's arrival, document score bounds, whether ``main`` already holds an ``event_id``).
``import great_expectations`` takes seconds: it happens only in :func:`validate`, on the audit
path, never when this module is imported.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa

from agentlake.config import Settings, setting_default
from agentlake.log.events import EVENT_TYPES

ROW = "row"
BATCH = "batch"
STATUSES = ("ok", "error", "cancelled", "timeout")
SAMPLE_VALUES = 5
PER_COLUMN_ROWS = 50_000  # from this many rows on, each column is validated on its own

@dataclass(frozen=True)
class QualityPolicy:
    """The thresholds the suites are held to (``AGENTLAKE_QUALITY_*`` settings)."""

    # Defaults are the settings' declared ones (agentlake.config): no second copy here.
    fleet_epoch: datetime = datetime.fromisoformat(setting_default("quality_fleet_epoch"))
    future_skew_s: float = setting_default("quality_future_skew_s")
    max_quarantine_share: float = setting_default("quality_max_quarantine_share")

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityPolicy:
        """The deployment's policy (``AGENTLAKE_QUALITY_*``)."""
        return cls(fleet_epoch=datetime.fromisoformat(settings.quality_fleet_epoch),
                   future_skew_s=settings.quality_future_skew_s,
                   max_quarantine_share=settings.quality_max_quarantine_share)

@dataclass(frozen=True)
class Rule:
    """One named check: a Great Expectations expectation, its level and what it means."""

    name: str
    level: str
    expectation: str  # a class name in great_expectations.expectations
    kwargs: Mapping[str, Any]
    description: str
    on: str = "rows"  # "rows": the batch's rows; "batch": the one-row frame of batch figures

@dataclass(frozen=True)
class Suite:
    """The rules a table's new rows must pass."""

    table: str
    rules: tuple[Rule, ...]

    @property
    def name(self) -> str:
        return f"agentlake.{self.table}"

@dataclass
class RuleResult:
    """One expectation's outcome on one batch."""

    rule: str
    level: str
    expectation: str
    column: str | None
    passed: bool
    element_count: int
    unexpected_count: int
    samples: list[Any]
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

@dataclass
class AuditResult:
    """What the suite found: every rule's outcome, and which rows broke which row rule."""

    suite: str
    rows: int
    results: list[RuleResult] = field(default_factory=list)
    bad_rows: dict[int, list[str]] = field(default_factory=dict)  # row index -> rules it broke
    seconds: float = 0.0

    @property
    def batch_failures(self) -> list[str]:
        return [r.rule for r in self.results if r.level == BATCH and not r.passed]

    @property
    def passed(self) -> bool:
        """Whether the batch may publish (row failures are quarantined, not blocking)."""
        return not self.batch_failures

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "rows": self.rows, "passed": self.passed, "batch_failures": self.batch_failures,
                "rows_quarantined": len(self.bad_rows), "seconds": round(self.seconds, 3),
                "results": [r.as_dict() for r in self.results]}

def _not_null(column: str) -> Rule:
    return Rule(f"{column}_not_null", ROW, "ExpectColumnValuesToNotBeNull", {"column": column},
                f"every row has a {column}")

def _at_least_zero(column: str, name: str) -> Rule:
    return Rule(name, ROW, "ExpectColumnValuesToBeBetween", {"column": column, "min_value": 0},
                f"{column} is not negative")

def events_suite(policy: QualityPolicy, *, expected_rows: int) -> Suite:
    """The suite of ``raw.events``: row rules quarantine single rows, batch rules hold the whole batch."""
    return Suite("raw.events", (
        *(_not_null(c) for c in ("event_id", "run_id", "agent_id", "type", "ts")),
        Rule("type_allowed", ROW, "ExpectColumnValuesToBeInSet", {"column": "type", "value_set": list(EVENT_TYPES)},
             "type is one of the known event types"),
        Rule("status_allowed", ROW, "ExpectColumnValuesToBeInSet", {"column": "status", "value_set": list(STATUSES)},
             "status, when given, is one of " + ", ".join(STATUSES)),
        _at_least_zero("input_tokens", "input_tokens_non_negative"),
        _at_least_zero("output_tokens", "output_tokens_non_negative"),
        _at_least_zero("latency_ms", "latency_non_negative"),
        Rule("feedback_score_in_unit_interval", ROW, "ExpectColumnValuesToBeBetween",
             {"column": "feedback_score", "min_value": 0, "max_value": 1}, "feedback scores lie in [0, 1]"),
        Rule("document_score_in_unit_interval", ROW, "ExpectColumnValuesToBeBetween",
             {"column": "document_score_min", "min_value": 0, "max_value": 1},
             "retrieved documents' scores lie in [0, 1] (lowest score)"),
        Rule("document_score_max_in_unit_interval", ROW, "ExpectColumnValuesToBeBetween",
             {"column": "document_score_max", "min_value": 0, "max_value": 1},
             "retrieved documents' scores lie in [0, 1] (highest score)"),
        Rule("ts_after_fleet_epoch", ROW, "ExpectColumnValuesToBeBetween",
             {"column": "ts_epoch_s", "min_value": policy.fleet_epoch.timestamp()},
             f"ts is not before the agent fleet existed ({policy.fleet_epoch.isoformat()})"),
        Rule("ts_not_in_future", ROW, "ExpectColumnValuesToBeBetween",
             {"column": "ts_lead_s", "max_value": policy.future_skew_s},
             f"ts is at most {policy.future_skew_s:g} s after its segment arrived"),
        Rule("event_id_unique", BATCH, "ExpectColumnValuesToBeUnique", {"column": "event_id_hash"},
             "event_id is unique within the batch (checked on a 64-bit hash: a collision holds the batch, "
             "it never lets a repeat through)"),
        Rule("event_id_new_to_main", BATCH, "ExpectColumnValuesToBeInSet",
             {"column": "event_id_on_main", "value_set": [False]}, "main does not hold the batch's event_ids yet"),
        Rule("row_count_matches_log", BATCH, "ExpectTableRowCountToEqual", {"value": expected_rows},
             "rows = the segments' lines - quarantined - duplicates"),
        Rule("quarantine_share_below_threshold", BATCH, "ExpectColumnValuesToBeBetween",
             {"column": "quarantine_share", "min_value": 0, "max_value": policy.max_quarantine_share},
             f"at most {policy.max_quarantine_share:.0%} of the batch's lines are quarantined", on="batch"),
        Rule("schema_additive", BATCH, "ExpectColumnValuesToBeInSet",
             {"column": "schema_breaking_changes", "value_set": [0]},
             "the table's schema is unchanged or evolved only by added columns", on="batch"),
    ))

def _batch_at_least_zero(column: str) -> Rule:
    return Rule(f"{column}_non_negative", BATCH, "ExpectColumnValuesToBeBetween", {"column": column, "min_value": 0},
                f"{column} is not negative")


def _batch_unit_interval(column: str) -> Rule:
    return Rule(f"{column}_in_unit_interval", BATCH, "ExpectColumnValuesToBeBetween",
                {"column": column, "min_value": 0, "max_value": 1}, f"{column} lies in [0, 1]")


# Per fact table: the columns checked for range, beyond the keys every fact table has.
_FACT_RANGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # (not negative, in [0, 1])
    "facts.agent_runs": (("steps", "llm_calls", "tool_calls", "retrievals", "input_tokens", "output_tokens",
                          "error_count"), ()),
    "facts.llm_calls": (("input_tokens", "output_tokens", "latency_ms"), ()),
    "facts.tool_calls": (("latency_ms",), ()),
    "facts.retrievals": (("document_rank", "latency_ms"), ("score",)),
    "facts.decisions": ((), ()),
    "facts.feedback": ((), ("feedback_score",)),
}


def facts_suite(table: str) -> Suite:
    """The suite of a fact table. Its rows derive from raw.events rows that passed their suite, so every
    rule is a batch rule: a failure means the derivation is wrong, and the table's batch is held."""
    non_negative, unit = _FACT_RANGES[table]
    keys: tuple[Rule, ...] = (
        Rule("run_id_not_null", BATCH, "ExpectColumnValuesToNotBeNull", {"column": "run_id"}, "every row has a run_id"),
        Rule("run_id_known", BATCH, "ExpectColumnValuesToBeInSet", {"column": "run_id_known", "value_set": [True]},
             "every row's run_id is in facts.agent_runs or among the raw.events rows of the same batch"),
    )
    if table == "facts.agent_runs":
        keys += (Rule("run_id_unique", BATCH, "ExpectColumnValuesToBeUnique", {"column": "run_id_hash"},
                      "one row per run in the batch (checked on a 64-bit hash of run_id)"),)
    else:
        keys += (Rule("event_id_not_null", BATCH, "ExpectColumnValuesToNotBeNull", {"column": "event_id"},
                      "every row has an event_id"),)
    return Suite(table, keys + tuple(_batch_at_least_zero(c) for c in non_negative)
                 + tuple(_batch_unit_interval(c) for c in unit))


def fact_audit_frame(table: str, rows: pa.Table, known_runs: pl.Series) -> pl.DataFrame:
    """The frame a fact table's suite validates: the checked columns plus run_id_known (and run_id_hash)."""
    non_negative, unit = _FACT_RANGES[table]
    columns = [c for c in ("event_id", "run_id", *non_negative, *unit) if c in rows.column_names]
    frame = pl.from_arrow(rows.select(columns))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(
        pl.col("run_id").is_in(known_runs.implode()).alias("run_id_known"),
        pl.col("run_id").hash(seed=11).alias("run_id_hash"),
    )


# Columns of raw.events the suite reads (the rest of the row is not checked).
EVENT_AUDIT_COLUMNS = ("event_id", "run_id", "agent_id", "type", "ts", "status", "input_tokens", "output_tokens",
                       "latency_ms", "feedback_score", "documents", "arrival", "segment_key", "line_offset")

def event_audit_frame(rows: pa.Table, ids_on_main: pl.Series) -> pl.DataFrame:
    """The frame the events suite validates: the audited columns plus the derived ones, in row order."""
    frame = pl.from_arrow(rows.select(list(EVENT_AUDIT_COLUMNS)))
    assert isinstance(frame, pl.DataFrame)
    scores = pl.col("documents").list.eval(pl.element().struct.field("score"))
    return frame.with_columns(
        (pl.col("ts").dt.epoch("us") / 1e6).alias("ts_epoch_s"),
        ((pl.col("ts").dt.epoch("us") - pl.col("arrival").dt.epoch("us")) / 1e6).alias("ts_lead_s"),
        scores.list.min().alias("document_score_min"),
        scores.list.max().alias("document_score_max"),
        pl.col("event_id").hash(seed=11).alias("event_id_hash"),
        pl.col("event_id").is_in(ids_on_main.implode()).alias("event_id_on_main"),
        # Few distinct values: dictionary-encoded, they take a fraction of the memory in pandas too.
        *(pl.col(c).cast(pl.Categorical) for c in ("segment_key", "run_id", "agent_id", "type", "status")),
    ).drop("documents", "ts", "arrival")

def schema_breaking_changes(before: Any, after: Any) -> list[str]:
    """Fields of the ``before`` schema that ``after`` dropped or changed (adding fields is not breaking)."""
    if before is None:
        return []
    changes = []
    for f in before.fields:
        try:
            g = after.find_field(f.field_id)
        except ValueError:
            changes.append(f"{f.name} removed")
            continue
        if g.field_type != f.field_type or g.name != f.name or (g.required and not f.required):
            changes.append(f"{f.name} changed")
    return changes

# --- running a suite with Great Expectations ------------------------------------------------------

_CONTEXT_LOCK = threading.Lock()

@functools.cache
def _context() -> tuple[Any, Any]:
    """An ephemeral Great Expectations context with one pandas batch definition (made once per process)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # The batch fingerprint hashes every value (about 0.4 s per million rows); batches are
    # identified by their Iceberg snapshot instead.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("agentlake").add_dataframe_asset("batch")
    return context, asset.add_batch_definition_whole_dataframe("whole")

def warm_up() -> threading.Thread:
    """Import Great Expectations on a background thread, so that an audit later in the run need not wait."""

    def load() -> None:
        with _CONTEXT_LOCK:
            _context()

    thread = threading.Thread(target=load, name="agentlake-gx-import", daemon=True)
    thread.start()
    return thread

def validate(
    suite: Suite, rows: pl.DataFrame, batch: Mapping[str, Any] | Callable[[AuditResult], Mapping[str, Any]] | None = None
) -> AuditResult:
    """Run ``suite`` on ``rows``, then its batch rules on the ``batch`` figures; never raises on bad data.

    Args:
        batch: the batch's figures, or a function of the row rules' outcome returning them (so
            that the share of quarantined lines counts the rows the row rules quarantine).
    """
    started = time.perf_counter()
    with _CONTEXT_LOCK:
        _, definition = _context()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    result = AuditResult(suite.name, rows.height)
    for on in ("rows", "batch"):
        if on == "rows":
            table = rows
        else:
            figures = batch(result) if callable(batch) else batch
            table = pl.DataFrame([dict(figures or {})])
        rules = [r for r in suite.rules if r.on == on and _applies(r, table)]
        # Large batches: one validation per column, on that column alone (Great Expectations filters
        # the whole frame for each expectation, so a narrow frame keeps the cost near the column's
        # size). Small ones: one validation of the whole frame (each validation has a fixed cost).
        if table.height < PER_COLUMN_ROWS:
            _run(gx, gxe, definition, f"{suite.name}.{on}", rules, table.to_pandas(), result)
            continue
        groups: dict[str, list[Rule]] = {}
        for rule in rules:
            groups.setdefault(rule.kwargs.get("column") or table.columns[0], []).append(rule)
        for column, group in groups.items():
            _run(gx, gxe, definition, f"{suite.name}.{on}.{column}", group, table.select(column).to_pandas(), result)
    order = {r.name: i for i, r in enumerate(suite.rules)}
    result.results.sort(key=lambda r: order[r.rule])
    for broken in result.bad_rows.values():
        broken.sort(key=order.__getitem__)
    result.seconds = time.perf_counter() - started
    return result


def _run(gx: Any, gxe: Any, definition: Any, name: str, rules: list[Rule], frame: Any, result: AuditResult) -> None:
    """Validate ``rules`` on ``frame`` and add their outcomes (and the rows that broke row rules) to ``result``."""
    if not rules:
        return
    expectations = [getattr(gxe, r.expectation)(**r.kwargs, meta={"rule": r.name}) for r in rules]
    gx_suite = gx.ExpectationSuite(name=name, expectations=expectations)
    outcome = definition.get_batch(batch_parameters={"dataframe": frame}).validate(
        gx_suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_VALUES}
    )
    by_name = {r.name: r for r in rules}
    for item in outcome.results:
        rule = by_name[(item.expectation_config.meta or {})["rule"]]
        res = item.result or {}
        unexpected = int(res.get("unexpected_count") or 0)
        if rule.expectation == "ExpectTableRowCountToEqual" and not item.success:
            unexpected = abs(int(res.get("observed_value") or 0) - int(rule.kwargs["value"]))
        result.results.append(RuleResult(
            rule=rule.name, level=rule.level, expectation=item.expectation_config.type,
            column=rule.kwargs.get("column"), passed=bool(item.success),
            element_count=int(res.get("element_count") or len(frame)), unexpected_count=unexpected,
            samples=_samples(res), description=rule.description,
        ))
        if rule.level == ROW and not item.success:
            for index in res.get("unexpected_index_list") or []:
                result.bad_rows.setdefault(int(index), []).append(rule.name)

def _applies(rule: Rule, frame: Any) -> bool:
    column = rule.kwargs.get("column")
    return column is None or column in frame.columns

def _samples(res: Mapping[str, Any]) -> list[Any]:
    values = res.get("partial_unexpected_list")
    if values is None and "observed_value" in res:
        values = [res["observed_value"]]
    return [_plain(v) for v in (values or [])[:SAMPLE_VALUES]]

def _plain(value: Any) -> Any:
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)

def describe_failure(rules: list[str], suite: Suite) -> str:
    """A readable reason for a quarantined row: the rules it broke and what each means."""
    by_name: dict[str, Rule] = {r.name: r for r in suite.rules}
    return "; ".join(f"{name}: {by_name[name].description}" if name in by_name else name for name in rules)
