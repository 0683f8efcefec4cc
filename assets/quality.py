"""The quality gate in the asset graph: the staged batch of raw.events and its Great Expectations checks.

``raw/events_staged`` is the batch an ingest run wrote to its staging branch; every rule of the
events suite (:mod:`agentlake.gate.suites`) is an asset check on it, carrying the expectation's
outcome (unexpected count, a few sample values) and links to the batch's Great Expectations
validation result and Data Docs page (:mod:`agentlake.gate.validations`). Batch rules (severity
``critical``) are blocking checks: when one fails, the Iceberg publish (the gate itself, in
:mod:`agentlake.gate.batch`) did not move ``main``, and the published ``raw/events`` does not
materialize. Row rules (severity ``warning``) only warn: their rows are quarantined
with the rule's name and the rest of the batch publishes.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
)

from agentlake.gate.batch import GateOutcome
from agentlake.gate.suites import BATCH, EVENTS_SUITE, SEVERITY, QualityPolicy, RuleResult, events_rules
from agentlake.pipeline.ingest import IngestReport
from agentlake.tables.schemas import EVENTS
from assets.raw_log import RAW_EVENT_LOG

STAGED_EVENTS_KEY = AssetKey(["raw", "events_staged"])

STAGED_EVENTS = AssetSpec(
    key=STAGED_EVENTS_KEY,
    deps=[RAW_EVENT_LOG],
    description="The batch an ingest run wrote to raw.events' staging branch (agentlake.staged.<run id>.<day>.<n>), "
    "where readers of main do not see it. Its checks are the Great Expectations suite of raw.events; a failed "
    "batch check holds the batch on its branch (see `agentlake publish`) and raw/events does not materialize. "
    "Each batch's validation result and Data Docs page are kept under audit/v1/ in the store.",
    group_name="raw",
    kinds={"iceberg", "greatexpectations"},
    skippable=True,
)

_RULES = events_rules(QualityPolicy())

GATE_CHECKS = [
    AssetCheckSpec(
        f"quality_{rule.name}",
        asset=STAGED_EVENTS_KEY,
        description=f"{'Batch' if rule.level == BATCH else 'Row'} rule ({rule.expectation}, severity "
        f"{SEVERITY[rule.level]}): {rule.description}."
        + (" Blocking: a failure publishes nothing." if rule.level == BATCH
           else " Rows that break it are quarantined with this rule's name; the rest publish."),
        blocking=rule.level == BATCH,
        metadata={"expectation_suite": EVENTS_SUITE, "expectation": rule.expectation},
    )
    for rule in _RULES
]


def _events_batches(report: IngestReport) -> list[GateOutcome]:
    return [g for g in report.gate if g.table == EVENTS.name]


def gate_outcome(report: IngestReport) -> tuple[bool, bool]:
    """(whether any batch was staged, whether every staged batch was published)."""
    batches = _events_batches(report)
    return bool(batches), all(not g.held for g in batches)


def _validation_links(outcome: GateOutcome) -> dict[str, Any]:
    """The Great Expectations validation result and Data Docs page of a staged batch, as links."""
    if outcome.validation is None:
        return {}
    return {"validation_result": MetadataValue.path(outcome.validation.result_uri),
            "data_docs": MetadataValue.url(outcome.validation.page_uri)}


def staged_materialization(report: IngestReport) -> MaterializeResult:
    """The staged asset's materialization: which branch and snapshot hold the batch, and what became of it."""
    batches = _events_batches(report)
    last = batches[-1]
    return MaterializeResult(
        asset_key=STAGED_EVENTS_KEY,
        metadata={
            "branch": last.branch,
            "staged_snapshot_id": str(last.staged_snapshot_id),
            "published_snapshot_id": str(last.published_snapshot_id or ""),
            "held": any(g.held for g in batches),
            "segments_held": report.segments_held,
            "rows_staged": sum(g.audit.rows for g in batches),
            "rows_quarantined_by_rules": report.rules_quarantined,
            "audit_seconds": round(sum(g.audit.seconds for g in batches), 3),
            "override": next((g.override for g in batches if g.override), "") or "",
            **_validation_links(last),
        },
    )


def gate_check_results(report: IngestReport) -> Iterator[AssetCheckResult]:
    """One result per rule of the suite, over every batch the run staged (a rule passes if it passed in all)."""
    batches = _events_batches(report)
    for rule in _RULES:
        outcomes: list[tuple[GateOutcome, RuleResult]] = [
            (g, r) for g in batches for r in g.results if r.rule == rule.name]
        failed = [(g, r) for g, r in outcomes if not r.passed]
        # The batch the check's result is about: the first that failed it, else the last staged.
        shown = failed[0][0] if failed else (batches[-1] if batches else None)
        metadata: dict[str, Any] = {
            "expectation": rule.expectation,
            "severity": SEVERITY[rule.level],
            "level": rule.level,
            "column": rule.column or "",
            "element_count": sum(r.element_count for _, r in outcomes),
            "unexpected_count": sum(r.unexpected_count for _, r in outcomes),
            "sample_values": ", ".join(str(v) for _, r in failed for v in r.samples)[:500],
            "branch": ", ".join(g.branch for g, _ in failed) or (shown.branch if shown else ""),
            "staged_snapshot_id": ", ".join(str(g.staged_snapshot_id) for g, _ in failed)
            or (str(shown.staged_snapshot_id) if shown else ""),
            "held": any(g.held for g, _ in failed),
            **(_validation_links(shown) if shown else {}),
        }
        if not outcomes:
            metadata["note"] = "nothing new was staged"
        yield AssetCheckResult(
            check_name=f"quality_{rule.name}",
            asset_key=STAGED_EVENTS_KEY,
            passed=not failed,
            severity=AssetCheckSeverity.ERROR if rule.level == BATCH else AssetCheckSeverity.WARN,
            description=rule.description,
            metadata=metadata,
        )
