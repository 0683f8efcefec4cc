"""Evaluation outputs: a day's decisions scored and its per-version figures, and the counterfactual comparison.

Thin wrappers over :mod:`agentlake.eval`: each materialization evaluates one arrival day and reports
its headline figures (decisions, artifacts replayed, reproducible rate, decision accuracy, per
version) as metadata. They sit downstream of the facts and of ``context_artifacts`` and run in the
``evaluation`` lane, launched by ``evaluation_sensor`` after new facts.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from agentlake.eval.compare import compare
from agentlake.eval.evaluate import evaluate_day
from agentlake.eval.tables import EVAL_COMPARISONS, EVAL_DAILY, EVAL_DECISIONS
from agentlake.sources.agents import READING_KINDS
from agentlake.sources.demo import AGENT_KINDS
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import FACT_TABLES, TableDef
from assets.context import CONTEXT_ARTIFACTS_KEY
from assets.ingest import ALL_ARRIVAL_DAYS, table_key
from assets.sources import EXT_KEYS
from assets.table_metadata import table_definition_metadata, table_metadata
from platform_defs.resources import LakeResource

EVAL_GROUP = "eval"
EVAL_LANE = "evaluation"
EVAL_DECISIONS_KEY, EVAL_DAILY_KEY, EVAL_COMPARISONS_KEY = (table_key(t) for t in (EVAL_DECISIONS, EVAL_DAILY,
                                                                                     EVAL_COMPARISONS))
# The mart of the decisions the evaluation scores: lineage raw -> facts -> marts -> eval in one graph. The
# evaluation reads the facts at its own pins (the marts file holds only its latest build, so reading it would
# not replay); tests hold the mart's per-decision figures equal to the evaluation's at the same snapshots.
EVAL_MART_KEY = AssetKey(["marts", "eval_decisions_base"])
UPSTREAM = [*(table_key(t) for t in FACT_TABLES), CONTEXT_ARTIFACTS_KEY, EVAL_MART_KEY, *EXT_KEYS]
# On an evaluation run: the earlier days whose decisions got feedback that arrived on the day it evaluated.
LATE_FEEDBACK_TAG = "agentlake/late-feedback-days"


def _spec(tdef: TableDef, key: AssetKey, deps: list[AssetKey], description: str) -> AssetSpec:
    return AssetSpec(key, deps=deps, group_name=EVAL_GROUP, kinds={"iceberg"}, description=description,
                     metadata=table_definition_metadata(tdef))


def build_eval_assets(days: DailyPartitionsDefinition) -> tuple[AssetsDefinition, AssetsDefinition]:
    """The evaluation assets over these arrival days."""

    @multi_asset(
        name="evaluate_day",
        partitions_def=days,
        specs=[
            _spec(EVAL_DECISIONS, EVAL_DECISIONS_KEY, UPSTREAM,
                  "One row per decision that arrived that day: correct against its feedback (late feedback "
                  "included), cost by the price table, latency, tool errors, and whether its context artifact "
                  "replays reproducibly. Each row carries the snapshots it read, its artifact and the evaluator."),
            _spec(EVAL_DAILY, EVAL_DAILY_KEY, [EVAL_DECISIONS_KEY],
                  "Per day and agent version: decision accuracy, reproducible rate, cost per decision, latency "
                  "percentiles, tool error rate. Re-evaluating a day makes a new snapshot; the earlier result stays "
                  "readable as of its time."),
        ],
    )
    def evaluate_day_assets(context: AssetExecutionContext, lake: LakeResource) -> Iterator[MaterializeResult]:
        tables = Lake(lake.settings())
        day = context.partition_key
        report = evaluate_day(tables, day, run_id=context.run.run_id)
        context.log.info(report.text())
        if report.late_feedback_days:  # the evaluation sensor evaluates these days again
            context.instance.add_run_tags(context.run.run_id, {LATE_FEEDBACK_TAG: ",".join(report.late_feedback_days)})
        versions = {f"{v.agent_id}@{v.agent_version}": v.__dict__ for v in report.versions}
        headline: dict[str, Any] = {
            "decisions": report.decisions,
            "artifacts_replayed": report.artifacts_replayed,
            "reproducible_rate": report.reproducible_rate if report.reproducible_rate is not None else "n/a",
            "decision_accuracy": report.decision_accuracy if report.decision_accuracy is not None else "n/a",
            "not_reproducible": MetadataValue.json(report.not_reproducible),
            "evaluator_version": report.evaluator_version,
            "late_feedback_days": MetadataValue.json(report.late_feedback_days),
            "pins": MetadataValue.json({k: str(v) for k, v in report.pins.items()}),
            "seconds": round(report.seconds, 2),
        }
        yield MaterializeResult(asset_key=EVAL_DECISIONS_KEY, metadata={
            **table_metadata(tables.table(EVAL_DECISIONS.name), EVAL_DECISIONS, day), **headline,
            "snapshot_id": str(report.decisions_snapshot_id or "")})
        yield MaterializeResult(asset_key=EVAL_DAILY_KEY, metadata={
            **table_metadata(tables.table(EVAL_DAILY.name), EVAL_DAILY, day), **headline,
            "versions": MetadataValue.json(versions), "snapshot_id": str(report.daily_snapshot_id or "")})

    @asset(
        key=EVAL_COMPARISONS_KEY,
        partitions_def=days,
        group_name=EVAL_GROUP,
        kinds={"iceberg"},
        deps=[EVAL_DAILY_KEY, CONTEXT_ARTIFACTS_KEY],
        metadata=table_definition_metadata(EVAL_COMPARISONS),
        description="Counterfactual comparison per reading agent: its rolling-out version re-decides the exact "
        "pinned contexts (the artifacts' records, not today's data) of its stable version's decisions that day, "
        "pair by pair on the same records hash, with the per-example differences.",
    )
    def eval_comparisons(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        tables = Lake(lake.settings())
        day = context.partition_key
        summary: dict[str, Any] = {}
        for kind in (k for k in AGENT_KINDS if k.name in READING_KINDS):
            for candidate in kind.versions[1:]:
                result = compare(tables, f"{kind.name}@{kind.versions[0]}", f"{kind.name}@{candidate}", day,
                                 run_id=context.run.run_id)
                summary[f"{result.baseline} vs {result.candidate}"] = {
                    k: v for k, v in result.as_dict().items() if k != "differences"}
                context.log.info(result.text())
        return MaterializeResult(metadata={
            **table_metadata(tables.table(EVAL_COMPARISONS.name), EVAL_COMPARISONS, day),
            "pairs": sum(s["pairs"] for s in summary.values()),
            "same_context": all(s["same_context"] for s in summary.values() if s["pairs"]),
            "comparisons": MetadataValue.json(summary),
        })

    return evaluate_day_assets, eval_comparisons


evaluate_day_assets, eval_comparisons = build_eval_assets(ALL_ARRIVAL_DAYS)
