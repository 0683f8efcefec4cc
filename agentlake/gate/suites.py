"""Data-quality suites as code: one Great Expectations ``ExpectationSuite`` per table, run on exactly the rows a commit adds.

Each rule is a Great Expectations expectation object with its ``severity``, ``description`` and its
name in ``meta["rule"]``. The severity is the rule's level:

- **row** (``severity="warning"``): a row that breaks it goes to ``raw.quarantine`` with the rule's
  name; the rest publish.
- **batch** (``severity="critical"``): a batch that breaks it publishes nothing; its staged data
  stays on its branch.

A suite runs through a ``ValidationDefinition`` on an ephemeral context with a
pandas data source (Great Expectations has no polars source, so the rows are converted to pandas at
the edge, with only the columns the suite reads plus a few derived ones: the lead of ``ts`` over
the segment's arrival, document score bounds, whether ``main`` already holds an ``event_id``). The
context, the suites and their validation definitions are made once per process, and each batch
runs its definition directly (a ``Checkpoint`` around it would add a second freshness check of
the whole suite and a result wrapper to every batch, a fixed cost that dominates small batches,
and has no actions to run here); what changes per batch (the
expected row count) is an expectation parameter (``{"$PARAMETER": ...}``). ``import
great_expectations`` takes seconds: it happens only when a suite is first built, never when this
module is imported. The outcome of one run is a single ``ExpectationSuiteValidationResult`` for the
whole suite, as Great Expectations would report it, kept with the audit (:class:`AuditResult`).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from agentlake.config import Settings, setting_default
from agentlake.log.events import EVENT_TYPES

if TYPE_CHECKING:
    from great_expectations.core import (
        ExpectationSuite,
        ExpectationSuiteValidationResult,
        ValidationDefinition,
    )
    from great_expectations.expectations import Expectation

ROW = "row"
EVENTS_SUITE = "agentlake.raw.events"
BATCH = "batch"
SEVERITY = {ROW: "warning", BATCH: "critical"}  # a rule's level is its expectation's severity
LEVEL = {severity: level for level, severity in SEVERITY.items()}
ROWS_FRAME, BATCH_FRAME = "rows", "batch"  # which frame a rule reads: the batch's rows, or its one-row figures
STATUSES = ("ok", "error", "cancelled", "timeout")
SAMPLE_VALUES = 5
PER_COLUMN_ROWS = 50_000  # from this many rows on, each column is validated on its own
# The full lists of unexpected values and indexes are read for quarantine, then dropped from the
# kept result: the rows themselves are in raw.quarantine, the result keeps a few samples.
_BULKY_RESULT_KEYS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")

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
    """One expectation of a suite as the gate and the UI name it: rule name, level and meaning."""

    name: str
    level: str
    expectation: str  # the class name in great_expectations.expectations
    column: str | None
    description: str
    frame: str = ROWS_FRAME

    @classmethod
    def of(cls, expectation: Expectation) -> Rule:
        meta = expectation.meta or {}
        return cls(name=meta["rule"], level=LEVEL[str(expectation.severity.value)],
                   expectation=type(expectation).__name__, column=getattr(expectation, "column", None),
                   description=expectation.description or "", frame=meta.get("frame", ROWS_FRAME))


@dataclass(frozen=True)
class Suite:
    """A table's Great Expectations suite and the parameters of the batch it is about to validate."""

    table: str
    expectations: ExpectationSuite
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.expectations.name)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(Rule.of(e) for e in self.expectations.expectations)


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
    """What the suite found: every expectation's outcome, and which rows broke which row rule.

    ``validation`` is the run as Great Expectations reports it (one ``ExpectationSuiteValidationResult``
    for the whole suite), kept beside the staged snapshot by :mod:`agentlake.gate.validations`.
    """

    suite: str
    rows: int
    results: list[RuleResult] = field(default_factory=list)
    bad_rows: dict[int, list[str]] = field(default_factory=dict)  # row index -> rules it broke
    seconds: float = 0.0
    validation: ExpectationSuiteValidationResult | None = field(default=None, repr=False, compare=False)

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


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


class _Declared:
    """An expectation as declared, without Great Expectations: its class name and arguments.

    The suites are written once, as functions of a namespace of expectation classes. Given Great
    Expectations' own (``_gxe()``) they build the suite the gate validates with; given this
    stand-in they give the rules' names, levels and meanings to whoever only describes them (the
    Dagster definitions, loaded by every process, which must not pay GX's import of seconds).
    """

    def __init__(self, expectation: str, kwargs: dict[str, Any]) -> None:
        self.expectation = expectation
        self.kwargs = kwargs

    def rule(self) -> Rule:
        meta = self.kwargs.get("meta") or {}
        return Rule(name=meta["rule"], level=LEVEL[self.kwargs["severity"]], expectation=self.expectation,
                    column=self.kwargs.get("column"), description=self.kwargs.get("description", ""),
                    frame=meta.get("frame", ROWS_FRAME))


class _Declarations:
    def __getattr__(self, name: str) -> Callable[..., _Declared]:
        return lambda **kwargs: _Declared(name, kwargs)


def events_rules(policy: QualityPolicy) -> tuple[Rule, ...]:
    """The rules of the ``raw.events`` suite, as declared (Great Expectations is not imported)."""
    return tuple(e.rule() for e in _events_list(_Declarations(), policy))


def facts_rules(table: str) -> tuple[Rule, ...]:
    """The rules of a fact table's suite, as declared (Great Expectations is not imported)."""
    return tuple(e.rule() for e in _facts_list(_Declarations(), table))


def _not_null(gxe: Any, column: str, level: str = ROW) -> Any:
    return gxe.ExpectColumnValuesToNotBeNull(
        column=column, severity=SEVERITY[level], description=f"every row has a {column}",
        meta={"rule": f"{column}_not_null"})


def _at_least_zero(gxe: Any, column: str, name: str, level: str = ROW) -> Any:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=0, severity=SEVERITY[level], description=f"{column} is not negative",
        meta={"rule": name})


def _unit_interval(gxe: Any, column: str, name: str, description: str, level: str = ROW) -> Any:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=0, max_value=1, severity=SEVERITY[level], description=description,
        meta={"rule": name})


def events_suite(policy: QualityPolicy, *, expected_rows: int | None = None) -> Suite:
    """The suite of ``raw.events`` for a batch of ``expected_rows`` rows: row rules quarantine single
    rows, batch rules hold the whole batch. The suite itself is built once per process and policy."""
    return Suite("raw.events", _events_expectations(policy), {"expected_rows": expected_rows})


@functools.cache
def _events_expectations(policy: QualityPolicy) -> ExpectationSuite:
    import great_expectations as gx

    return gx.ExpectationSuite(name=EVENTS_SUITE, expectations=_events_list(_gxe(), policy))


def _events_list(gxe: Any, policy: QualityPolicy) -> list[Any]:
    row, batch = SEVERITY[ROW], SEVERITY[BATCH]
    return [
        *(_not_null(gxe, c) for c in ("event_id", "run_id", "agent_id", "type", "ts")),
        gxe.ExpectColumnValuesToBeInSet(
            column="type", value_set=list(EVENT_TYPES), severity=row,
            description="type is one of the known event types", meta={"rule": "type_allowed"}),
        gxe.ExpectColumnValuesToBeInSet(
            column="status", value_set=list(STATUSES), severity=row,
            description="status, when given, is one of " + ", ".join(STATUSES), meta={"rule": "status_allowed"}),
        _at_least_zero(gxe, "input_tokens", "input_tokens_non_negative"),
        _at_least_zero(gxe, "output_tokens", "output_tokens_non_negative"),
        _at_least_zero(gxe, "latency_ms", "latency_non_negative"),
        _unit_interval(gxe, "feedback_score", "feedback_score_in_unit_interval", "feedback scores lie in [0, 1]"),
        _unit_interval(gxe, "document_score_min", "document_score_in_unit_interval",
                       "retrieved documents' scores lie in [0, 1] (lowest score)"),
        _unit_interval(gxe, "document_score_max", "document_score_max_in_unit_interval",
                       "retrieved documents' scores lie in [0, 1] (highest score)"),
        gxe.ExpectColumnValuesToBeBetween(
            column="ts_epoch_s", min_value=policy.fleet_epoch.timestamp(), severity=row,
            description=f"ts is not before the agent fleet existed ({policy.fleet_epoch.isoformat()})",
            meta={"rule": "ts_after_fleet_epoch"}),
        gxe.ExpectColumnValuesToBeBetween(
            column="ts_lead_s", max_value=policy.future_skew_s, severity=row,
            description=f"ts is at most {policy.future_skew_s:g} s after its segment arrived",
            meta={"rule": "ts_not_in_future"}),
        gxe.ExpectColumnValuesToBeUnique(
            column="event_id_hash", severity=batch,
            description="event_id is unique within the batch (checked on a 64-bit hash: a collision holds the "
            "batch, it never lets a repeat through)", meta={"rule": "event_id_unique"}),
        gxe.ExpectColumnValuesToBeInSet(
            column="event_id_on_main", value_set=[False], severity=batch,
            description="main does not hold the batch's event_ids yet", meta={"rule": "event_id_new_to_main"}),
        gxe.ExpectTableRowCountToEqual(
            value={"$PARAMETER": "expected_rows"}, severity=batch,
            description="rows = the segments' lines - quarantined - duplicates", meta={"rule": "row_count_matches_log"}),
        gxe.ExpectColumnValuesToBeBetween(
            column="quarantine_share", min_value=0, max_value=policy.max_quarantine_share, severity=batch,
            description=f"at most {policy.max_quarantine_share:.0%} of the batch's lines are quarantined",
            meta={"rule": "quarantine_share_below_threshold", "frame": BATCH_FRAME}),
        gxe.ExpectColumnValuesToBeInSet(
            column="schema_breaking_changes", value_set=[0], severity=batch,
            description="the table's schema is unchanged or evolved only by added columns",
            meta={"rule": "schema_additive", "frame": BATCH_FRAME}),
    ]


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
    return Suite(table, _facts_expectations(table))


@functools.cache
def _facts_expectations(table: str) -> ExpectationSuite:
    import great_expectations as gx

    return gx.ExpectationSuite(name=f"agentlake.{table}", expectations=_facts_list(_gxe(), table))


def _facts_list(gxe: Any, table: str) -> list[Any]:
    non_negative, unit = _FACT_RANGES[table]
    batch = SEVERITY[BATCH]
    keys: list[Any] = [
        _not_null(gxe, "run_id", BATCH),
        gxe.ExpectColumnValuesToBeInSet(
            column="run_id_known", value_set=[True], severity=batch,
            description="every row's run_id is in facts.agent_runs or among the raw.events rows of the same batch",
            meta={"rule": "run_id_known"}),
    ]
    if table == "facts.agent_runs":
        keys.append(gxe.ExpectColumnValuesToBeUnique(
            column="run_id_hash", severity=batch,
            description="one row per run in the batch (checked on a 64-bit hash of run_id)",
            meta={"rule": "run_id_unique"}))
    else:
        keys.append(_not_null(gxe, "event_id", BATCH))
    return [
        *keys, *(_at_least_zero(gxe, c, f"{c}_non_negative", BATCH) for c in non_negative),
        *(_unit_interval(gxe, c, f"{c}_in_unit_interval", f"{c} lies in [0, 1]", BATCH) for c in unit),
    ]


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

def event_audit_frame(rows: pa.Table, ids_on_main: pl.Series, *, now: datetime | None = None) -> pl.DataFrame:
    """The frame the events suite validates: the audited columns plus the derived ones, in row order.

    An event's lead is measured against its real arrival: the segment's arrival as its key claims
    it, but never later than ``now`` (the audit's own clock), so a producer whose clock runs ahead
    cannot carry events from the future past ``ts_not_in_future``.
    """
    frame = pl.from_arrow(rows.select(list(EVENT_AUDIT_COLUMNS)))
    assert isinstance(frame, pl.DataFrame)
    scores = pl.col("documents").list.eval(pl.element().struct.field("score"))
    audit_us = int((now or datetime.now(UTC)).timestamp() * 1_000_000)
    arrived_us = pl.min_horizontal(pl.col("arrival").dt.epoch("us"), pl.lit(audit_us))
    return frame.with_columns(
        (pl.col("ts").dt.epoch("us") / 1e6).alias("ts_epoch_s"),
        ((pl.col("ts").dt.epoch("us") - arrived_us) / 1e6).alias("ts_lead_s"),
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
_RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_VALUES}
# (id of the suite, frame, column or None, rule names) -> (the suite, kept alive so its id is not reused; definition)
_DEFINITIONS: dict[tuple[int, str, str | None, tuple[str, ...]], tuple[ExpectationSuite, ValidationDefinition]] = {}
_NAMES = itertools.count()


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


def _definition(suite: Suite, frame: str, column: str | None, rules: list[Rule]) -> ValidationDefinition:
    """The validation definition that validates ``rules`` of ``suite`` on one frame (made once per process)."""
    key = (id(suite.expectations), frame, column, tuple(r.name for r in rules))
    with _CONTEXT_LOCK:
        if key not in _DEFINITIONS:
            import great_expectations as gx

            context, definition = _context()
            wanted = {r.name for r in rules}
            part = f"{suite.name}.{frame}" + (f".{column}" if column else "") + f".{next(_NAMES)}"
            sub = context.suites.add(gx.ExpectationSuite(name=part, expectations=[
                e.copy(deep=True) for e in suite.expectations.expectations if (e.meta or {})["rule"] in wanted]))
            _DEFINITIONS[key] = (suite.expectations, context.validation_definitions.add(gx.ValidationDefinition(
                name=part, data=definition, suite=sub)))
        return _DEFINITIONS[key][1]


def validate(
    suite: Suite, rows: pl.DataFrame, batch: Mapping[str, Any] | Callable[[AuditResult], Mapping[str, Any]] | None = None
) -> AuditResult:
    """Run ``suite`` on ``rows``, then its rules on the ``batch`` figures; never raises on bad data.

    Args:
        batch: the batch's figures, or a function of the row rules' outcome returning them (so
            that the share of quarantined lines counts the rows the row rules quarantine).
    """
    started = time.perf_counter()
    result = AuditResult(suite.name, rows.height)
    rules = suite.rules
    items: list[Any] = []
    for frame in (ROWS_FRAME, BATCH_FRAME):
        if frame == ROWS_FRAME:
            table = rows
        else:
            figures = batch(result) if callable(batch) else batch
            table = pl.DataFrame([dict(figures or {})])
        applicable = [r for r in rules if r.frame == frame and (r.column is None or r.column in table.columns)]
        if not applicable:
            continue
        # Large batches: one validation per column, on that column alone (Great Expectations filters
        # the whole frame for each expectation, so a narrow frame keeps the cost near the column's
        # size). Small ones: one validation of the whole frame (each validation has a fixed cost).
        if table.height < PER_COLUMN_ROWS:
            items += _run(_definition(suite, frame, None, applicable), suite, table.to_pandas(), result)
            continue
        groups: dict[str, list[Rule]] = {}
        for rule in applicable:
            groups.setdefault(rule.column or table.columns[0], []).append(rule)
        for column, group in groups.items():
            items += _run(_definition(suite, frame, column, group), suite, table.select(column).to_pandas(), result)
    order = {r.name: i for i, r in enumerate(rules)}
    result.results.sort(key=lambda r: order[r.rule])
    items.sort(key=lambda item: order[item.expectation_config.meta["rule"]])
    for broken in result.bad_rows.values():
        broken.sort(key=order.__getitem__)
    result.validation = _suite_result(suite, items)
    result.seconds = time.perf_counter() - started
    return result


def _run(definition: ValidationDefinition, suite: Suite, frame: Any, result: AuditResult) -> list[Any]:
    """Run ``definition`` on ``frame``; add its outcomes (and the rows that broke row rules) to ``result``."""
    context, _ = _context()
    # One run at a time per process: the runs share the context's one dataframe batch definition, and
    # two at once (two threads auditing) can each be handed the other's frame.
    with _CONTEXT_LOCK:
        outcome = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=dict(suite.parameters),
                                 result_format=_RESULT_FORMAT)
        # The ephemeral context keeps every result in memory: this process keeps only its own copy.
        # Under the lock the store holds this run's result alone.
        store = context.validation_results_store
        for key in store.list_keys():
            store.remove_key(key)
    by_name = {r.name: r for r in suite.rules}
    for item in outcome.results:
        config = item.expectation_config
        assert config is not None  # every result of a suite's run carries its expectation
        rule = by_name[(config.meta or {})["rule"]]
        res = item.result or {}
        unexpected = int(res.get("unexpected_count") or 0)
        if rule.expectation == "ExpectTableRowCountToEqual" and not item.success:
            unexpected = abs(int(res.get("observed_value") or 0) - int(config.kwargs["value"]))
        result.results.append(RuleResult(
            rule=rule.name, level=rule.level, expectation=rule.expectation, column=rule.column,
            passed=bool(item.success), element_count=int(res.get("element_count") or len(frame)),
            unexpected_count=unexpected, samples=_samples(res), description=rule.description,
        ))
        if rule.level == ROW and not item.success:
            for index in res.get("unexpected_index_list") or []:
                result.bad_rows.setdefault(int(index), []).append(rule.name)
        item.result = {k: v for k, v in res.items() if k not in _BULKY_RESULT_KEYS}
    return list(outcome.results)


def _suite_result(suite: Suite, items: list[Any]) -> ExpectationSuiteValidationResult:
    """One result for the whole suite, as a single validation of it would have reported."""
    from great_expectations.core import ExpectationSuiteValidationResult

    passed = sum(1 for item in items if item.success)
    return ExpectationSuiteValidationResult(
        success=passed == len(items), results=items, suite_name=suite.name,
        suite_parameters={k: v for k, v in suite.parameters.items() if v is not None},
        statistics={"evaluated_expectations": len(items), "successful_expectations": passed,
                    "unsuccessful_expectations": len(items) - passed,
                    "success_percent": 100.0 * passed / len(items) if items else None},
        meta={"table": suite.table},
    )


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
