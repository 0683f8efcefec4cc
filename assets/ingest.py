"""Ingest assets: the Iceberg tables built from the raw event log, partitioned by arrival day."""


from collections.abc import Iterator
from datetime import date
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from agentlake.gate.suites import QualityPolicy
from agentlake.gate.validations import write_data_docs
from agentlake.log.segments import SegmentInfo
from agentlake.pipeline.facts import rebuild_facts, update_facts
from agentlake.pipeline.ingest import ingest
from agentlake.pipeline.reconcile import reconcile
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, FACT_TABLES, QUARANTINE, TableDef
from assets.quality import (
    GATE_CHECKS,
    STAGED_EVENTS,
    STAGED_EVENTS_KEY,
    gate_check_results,
    gate_outcome,
    staged_materialization,
)
from assets.raw_log import RAW_EVENT_LOG
from assets.table_metadata import table_definition_metadata, table_metadata
from platform_defs.lanes import LANE_TAG
from platform_defs.partitions import arrival_days
from platform_defs.resources import LakeResource

# Arrival days outside a deployment (tests, scripts): every day since the log's format began. A
# deployment's definitions start at its first day instead (platform_defs.partitions).
ALL_ARRIVAL_DAYS = arrival_days(date(2025, 1, 1))
INGEST_LANE_TAG = LANE_TAG


def table_key(tdef: TableDef) -> AssetKey:
    return AssetKey(tdef.name.split("."))


def _spec(tdef: TableDef) -> AssetSpec:
    deps = [RAW_EVENT_LOG] if tdef in (EVENTS, QUARANTINE) else [table_key(EVENTS)]
    if tdef == EVENTS:
        deps.append(STAGED_EVENTS_KEY)  # published from the staged batch once its checks passed
    return AssetSpec(
        key=table_key(tdef),
        deps=deps,
        skippable=tdef in (EVENTS, QUARANTINE),  # not materialized when the quality gate held the batch
        description=tdef.description,
        group_name="raw" if tdef in (EVENTS, QUARANTINE) else "facts",
        kinds={"iceberg", "polars"},
        metadata=table_definition_metadata(tdef),
    )


RECONCILIATION = AssetCheckSpec(
    "reconciliation",
    asset=table_key(EVENTS),
    description="For the arrival day: every line of the segments the tables hold is a row in raw.events, a "
    "quarantined line or a duplicate, and no segment older than the newest ingested one is missing "
    "(newer ones are pending: the next run takes them).",
)


class IngestConfig(Config):
    """Which segments to ingest: the sensor names them; empty means the whole arrival day (a backfill)."""

    segments: list[str] = []


class FactsConfig(Config):
    """Rebuild the day's facts from raw.events (a backfill), or only add what is new (the sensor's runs)."""

    rebuild: bool = True


def _options(context: AssetExecutionContext, lake: LakeResource) -> IngestOptions:
    return IngestOptions(
        run_id=context.run.run_id,
        dagster_run_id=context.run.run_id,
        partition=context.partition_key,
        dedup_window_days=lake.settings().dedup_window_days,
        quality=QualityPolicy.from_settings(lake.settings()),
    )


# The one writer of the fact tables: the facts step of every run (the facts lane's, a backfill's, a UI
# launch's) holds this pool's single slot. A facts commit that finds its table moved starts its stage
# again from a fresh read, so a rebuild of a past day, niced and slow beside today's facts runs that
# commit every few seconds, lost every race and started over for minutes; one writer at a time, it
# commits on its first attempt.
FACTS_POOL = "fact_tables"


def build_ingest_assets(days: DailyPartitionsDefinition) -> tuple[AssetsDefinition, AssetsDefinition]:
    """The ingest and facts assets over these arrival days (a deployment's, or :data:`ALL_ARRIVAL_DAYS`)."""

    @multi_asset(
        name="ingest_log",
        specs=[STAGED_EVENTS, _spec(EVENTS), _spec(QUARANTINE)],
        check_specs=[RECONCILIATION, *GATE_CHECKS],
        partitions_def=days,
        can_subset=False,
        description="Ingests the log segments of one arrival day exactly once into raw.events, with every bad "
        "line in raw.quarantine. Launched by raw_event_log_sensor for new segments; a backfill of a day ingests "
        "whatever of that day the tables do not hold yet.",
    )
    def ingest_log(context: AssetExecutionContext, config: IngestConfig, lake: LakeResource) -> Iterator[Any]:
        yield from _ingest_day(context, config, lake)

    @multi_asset(
        name="build_facts",
        specs=[_spec(t) for t in FACT_TABLES],
        partitions_def=days,
        can_subset=False,
        pool=FACTS_POOL,
        description="Derives the fact tables from raw.events for one arrival day: incrementally for the "
        "segments the sensor ingested, or, in a backfill, by rebuilding the day and replacing it in one commit "
        "per table. Both give identical results.",
    )
    def build_facts(context: AssetExecutionContext, config: FactsConfig, lake: LakeResource) -> Iterator[Any]:
        yield from _facts_day(context, config, lake)

    return ingest_log, build_facts


def _ingest_day(context: AssetExecutionContext, config: IngestConfig, lake: LakeResource) -> Iterator[Any]:
    day = context.partition_key
    opened = Lake(lake.settings())
    if config.segments:
        segments = [SegmentInfo.from_key(key) for key in config.segments]
        wrong_day = [s.key for s in segments if s.dt != day]
        if wrong_day:
            raise ValueError(f"segments {wrong_day[:3]} did not arrive on partition {day}; request them per day")
    else:
        segments = opened.log.list_day(day)
    report = ingest(opened, segments, _options(context, lake))
    # Published (or held) already: the audits' Data Docs pages are rendered off the way to main.
    write_data_docs(opened.store, [(g.validation, g.audit) for g in report.gate])
    context.log.info(
        f"{day}: {report.segments} segment(s), {report.rows} rows, {report.quarantined} quarantined, "
        f"{report.duplicates} duplicates in {report.seconds:.2f}s"
    )
    (result,) = reconcile(opened, day)
    staged, published = gate_outcome(report)
    if staged:
        yield staged_materialization(report)
    yield from gate_check_results(report)
    for tdef in (EVENTS, QUARANTINE) if published else ():
        yield MaterializeResult(asset_key=table_key(tdef), metadata=_metadata(opened, tdef, day, report, result.as_dict()))
    yield AssetCheckResult(
        check_name="reconciliation",
        asset_key=table_key(EVENTS),
        passed=result.balanced,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "day": day,
            "lines_in_log": result.lines_in_log,
            "rows": result.rows,
            "quarantined": result.quarantined,
            "duplicates": result.duplicates,
            "segments_in_log": result.segments_in_log,
            "segments_missing": len(result.segments_missing),
            "segments_pending": result.segments_pending,
            "first_missing": result.segments_missing[0] if result.segments_missing else "",
            "segments_held": result.segments_held,
            "lines_held": result.lines_held,
            "segments_bad": len(result.segments_bad),
            "first_bad": result.segments_bad[0] if result.segments_bad else "",
            "stray_objects": len(result.stray_objects),
        },
    )


def _facts_day(context: AssetExecutionContext, config: FactsConfig, lake: LakeResource) -> Iterator[Any]:
    day = context.partition_key
    opened = Lake(lake.settings())
    options = _options(context, lake)
    report = rebuild_facts(opened, day, options) if config.rebuild else update_facts(opened, day, options)
    context.log.info(f"{day}: {report.rows} fact rows from {report.segments} segment(s) in {report.seconds:.2f}s")
    for tdef in FACT_TABLES:
        yield MaterializeResult(asset_key=table_key(tdef), metadata=_metadata(opened, tdef, day, report, None))


def _metadata(
    lake: Lake, tdef: TableDef, day: str, report: IngestReport, reconciliation: dict[str, Any] | None
) -> dict[str, Any]:
    table = lake.table(tdef.name)
    snapshot = table.current_snapshot()
    meta: dict[str, Any] = {
        **table_metadata(table, tdef, day),
        "snapshot_id": str(snapshot.snapshot_id) if snapshot else "",
        "committed_snapshot": str(report.snapshots.get(tdef.name, "")) or "nothing new",
        "table_location": MetadataValue.path(table.location()),
        "segments": report.segments,
        "first_segment": report.first_key or "",
        "last_segment": report.last_key or "",
        "rows_added": _rows_added(snapshot) if report.snapshots.get(tdef.name) else 0,
        "rows_quarantined": report.quarantined,
        "duplicates": report.duplicates,
    }
    if reconciliation is not None:
        meta["reconciliation"] = MetadataValue.json(reconciliation)
    return meta


def _rows_added(snapshot: Any) -> int:
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("added-records", 0))


ingest_log, build_facts = build_ingest_assets(ALL_ARRIVAL_DAYS)
