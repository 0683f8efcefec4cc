"""The quality gate in the asset graph: the staged batch of raw.events and its Great Expectations checks.

``raw/events_staged`` is the batch an ingest run wrote to its staging branch; every rule of the
events suite (:mod:`agentlake.gate.suites`) is an asset check on it, carrying the expectation's
outcome (unexpected count, a few sample values). Batch rules are blocking checks: when one fails,
the Iceberg publish (the gate itself, in :mod:`agentlake.gate.batch`) did not move ``main``, and the
published ``raw/events`` does not materialize. Row rules only warn: their rows are quarantined
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
)

from agentlake.gate.suites import BATCH, QualityPolicy, events_suite
from agentlake.pipeline.ingest import IngestReport
from assets.raw_log import RAW_EVENT_LOG

STAGED_EVENTS_KEY = AssetKey(["raw", "events_staged"])

STAGED_EVENTS = AssetSpec(
    key=STAGED_EVENTS_KEY,
    deps=[RAW_EVENT_LOG],
    description="The batch an ingest run wrote to raw.events' staging branch (agentlake.staged.<run id>.<day>.<n>), "
    "where readers of main do not see it. Its checks are the Great Expectations suite of raw.events; a failed "
    "batch check holds the batch on its branch (see `agentlake publish`) and raw/events does not materialize.",
    group_name="raw",
    kinds={"iceberg", "greatexpectations"},
    skippable=True,
)

_RULES = events_suite(QualityPolicy(), expected_rows=0).rules

GATE_CHECKS = [
    AssetCheckSpec(
        f"quality_{rule.name}",
        asset=STAGED_EVENTS_KEY,
        description=f"{'Batch' if rule.level == BATCH else 'Row'} rule ({rule.expectation}): {rule.description}."
        + (" Blocking: a failure publishes nothing." if rule.level == BATCH
           else " Rows that break it are quarantined with this rule's name; the rest publish."),
        blocking=rule.level == BATCH,
    )
    for rule in _RULES
]


def gate_outcome(report: IngestReport) -> tuple[bool, bool]:
    """(whether any batch was staged, whether every staged batch was published)."""
    return bool(report.gate), all(not g["held"] for g in report.gate)


def staged_materialization(report: IngestReport) -> MaterializeResult:
    """The staged asset's materialization: which branch and snapshot hold the batch, and what became of it."""
    last = report.gate[-1]
    return MaterializeResult(
        asset_key=STAGED_EVENTS_KEY,
        metadata={
            "branch": last["branch"],
            "staged_snapshot_id": str(last["staged_snapshot_id"]),
            "published_snapshot_id": str(last["published_snapshot_id"] or ""),
            "held": any(g["held"] for g in report.gate),
            "segments_held": report.segments_held,
            "rows_staged": sum(g["audit"]["rows"] for g in report.gate),
            "rows_quarantined_by_rules": report.rules_quarantined,
            "audit_seconds": round(sum(g["audit"]["seconds"] for g in report.gate), 3),
            "override": next((g["override"] for g in report.gate if g["override"]), "") or "",
        },
    )


def gate_check_results(report: IngestReport) -> Iterator[AssetCheckResult]:
    """One result per rule of the suite, over every batch the run staged (a rule passes if it passed in all)."""
    for rule in _RULES:
        outcomes = [(g, r) for g in report.gate for r in g["audit"]["results"] if r["rule"] == rule.name]
        failed = [(g, r) for g, r in outcomes if not r["passed"]]
        metadata: dict[str, Any] = {
            "expectation": rule.expectation,
            "level": rule.level,
            "column": rule.kwargs.get("column") or "",
            "element_count": sum(r["element_count"] for _, r in outcomes),
            "unexpected_count": sum(r["unexpected_count"] for _, r in outcomes),
            "sample_values": ", ".join(str(v) for _, r in failed for v in r["samples"])[:500],
            "branch": ", ".join(g["branch"] for g, _ in failed) or (report.gate[-1]["branch"] if report.gate else ""),
            "staged_snapshot_id": ", ".join(str(g["staged_snapshot_id"]) for g, _ in failed)
            or (str(report.gate[-1]["staged_snapshot_id"]) if report.gate else ""),
            "held": any(g["held"] for g, _ in failed),
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
