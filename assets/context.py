"""Context artifacts: the daily index of the artifacts agent runs made, with its checks.

Artifacts are made by agents (the API and `agentlake context build`), one per context request;
this asset indexes a day of them into ``context.artifacts``. Partitions are days, never runs:
millions of runs would pass Dagster's limit on partitions per asset.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from agentlake.context.audit import day_decisions
from agentlake.context.index import CONTEXT_ARTIFACTS, DayIndex, index_day
from agentlake.maintenance.clustering import cluster_day
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, FACT_TABLES, RETRIEVALS, TABLES_BY_NAME
from assets.ingest import ALL_ARRIVAL_DAYS, table_key
from assets.sources import EXT_KEYS
from assets.table_metadata import table_definition_metadata, table_metadata
from platform_defs.audit_page import audit_url
from platform_defs.resources import LakeResource

CONTEXT_ARTIFACTS_KEY = AssetKey("context_artifacts")
PINNABLE = (EVENTS, *FACT_TABLES)  # the tables artifacts read: upstream of the index in the lineage
DECISIONS_LISTED = 100  # rows of the day's decisions table
DECISIONS_LINKED = 20  # audit pages and committing runs linked one by one (Dagster lists every entry)
_DECISION_COLUMNS = (("run_id", "the agent run"), ("decision", "its decision's label"),
                     ("artifact_key", "the context artifact it read"), ("pins", "table@snapshot it pinned"),
                     ("committed_by", "table: the Dagster run that committed the pinned snapshot"),
                     ("audit_page", "the rendered audit walk of the run"))
_CHECKS = {
    "artifacts_readable": ("readable", "Every artifact created that day can be read: its manifest parses and its "
                                        "address matches its content."),
    "artifacts_hash_verified": ("hash_verified", "Every artifact's records files hash to what its manifest "
                                                 "recorded, and their records to its records hash."),
    "artifact_pins_resolvable": ("pins_resolvable", "Every table snapshot an artifact pins can still be read (in "
                                                    "its table, or through its pin record), so the artifact can be "
                                                    "replayed."),
}


def _index_artifacts(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
    day = context.partition_key
    tables = Lake(lake.settings())
    report = index_day(tables, day, run_id=context.run.run_id)
    context.log.info(f"{day}: indexed {report.artifacts} artifact(s), {report.records} records")
    yield MaterializeResult(
        metadata={
            **table_metadata(tables.table(CONTEXT_ARTIFACTS.name), CONTEXT_ARTIFACTS, day),
            "artifacts": report.artifacts,
            "records": report.records,
            "snapshot_id": str(report.snapshot_id or ""),
            "checks": MetadataValue.json(report.as_dict()),
            **_decisions_metadata(tables, day),
        }
    )
    for name, (attr, _doc) in _CHECKS.items():
        yield _check(report, name, attr)


def _decisions_metadata(lake: Lake, day: str) -> dict[str, Any]:
    """The day's decisions with their artifacts and pins, and links to what is behind each pinned snapshot."""
    decisions = day_decisions(lake, day, limit=DECISIONS_LISTED)
    records = [TableRecord({
        "run_id": d.run_id, "decision": d.decision or "(none ingested)", "artifact_key": d.artifact_key,
        "pins": ", ".join(f"{t}@{s}" for t, s in sorted(d.pins.items())),
        "committed_by": ", ".join(f"{t}: {r or 'not Dagster'}" for t, r in sorted(d.committed_by.items())),
        "audit_page": audit_url(lake.settings, d.run_id),
    }) for d in decisions]
    schema = TableSchema(columns=[TableColumn(name, "string", description=doc) for name, doc in _DECISION_COLUMNS])
    meta: dict[str, Any] = {"decisions": MetadataValue.table(records, schema)}
    for d in decisions[:DECISIONS_LINKED]:
        meta[f"audit {d.run_id}"] = MetadataValue.url(audit_url(lake.settings, d.run_id))
    pinned = sorted({(t, s, r) for d in decisions for t, s in d.pins.items() for r in [d.committed_by.get(t)]},
                    key=lambda p: (p[0], str(p[1])))
    for table, _snapshot, _run in pinned:
        if table in TABLES_BY_NAME:
            meta[f"pinned {table}"] = MetadataValue.asset(table_key(TABLES_BY_NAME[table]))
    for table, snapshot, run_id in pinned[:DECISIONS_LINKED]:
        if run_id:
            meta[f"committed {table}@{snapshot}"] = MetadataValue.dagster_run(run_id)
    return meta


def _check(report: DayIndex, name: str, attr: str) -> AssetCheckResult:
    failing = report.failing(attr)
    return AssetCheckResult(
        check_name=name,
        asset_key=CONTEXT_ARTIFACTS_KEY,
        passed=not failing,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "artifacts": len(report.checks),
            "failing": len(failing),
            "first_failing": failing[0].key if failing else "",
            "problem": failing[0].problems[0] if failing and failing[0].problems else "",
        },
    )


CLUSTERED_BY_RUN = (EVENTS, RETRIEVALS)


def _cluster_day(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    lk = Lake(lake.settings())
    reports = [cluster_day(lk, tdef.name, context.partition_key) for tdef in CLUSTERED_BY_RUN]
    for r in reports:
        context.log.info(f"{r.table} {r.day}: {r.files_read} file(s) -> {r.files_written}, {r.rows} rows")
    return MaterializeResult(metadata={
        f"{r.table}": MetadataValue.json({"files_read": r.files_read, "files_written": r.files_written,
                                          "rows": r.rows, "snapshot_id": str(r.snapshot_id or ""),
                                          "seconds": round(r.seconds, 2)})
        for r in reports
    })


def build_context_assets(days: DailyPartitionsDefinition) -> tuple[AssetsDefinition, AssetsDefinition]:
    """The context index and layout assets over these arrival days."""

    @asset(
        key=CONTEXT_ARTIFACTS_KEY,
        partitions_def=days,
        group_name="context",
        kinds={"iceberg", "s3"},
        deps=[*(table_key(t) for t in PINNABLE), *EXT_KEYS],
        check_specs=[AssetCheckSpec(name, asset=CONTEXT_ARTIFACTS_KEY, description=doc)
                     for name, (_attr, doc) in _CHECKS.items()],
        metadata=table_definition_metadata(CONTEXT_ARTIFACTS),
        description="Per-run context artifacts made on the day (UTC), indexed into the Iceberg table "
        "context.artifacts: artifact key, run, agent, pins {table: snapshot_id}, record count and records hash. "
        "Each artifact is write-once and content-addressed under artifacts/v1/ in the object store; "
        "`agentlake replay ARTIFACT|RUN_ID` re-executes it at its pinned snapshots. Each materialization lists "
        "the day's decisions with their artifacts and pins, links to the runs that committed the pinned "
        "snapshots, and to each run's audit page (`agentlake audit RUN_ID` in a terminal).",
    )
    def context_artifacts(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        yield from _index_artifacts(context, lake)

    @asset(
        key=AssetKey("context_layout"),
        partitions_def=days,
        group_name="context",
        kinds={"iceberg"},
        deps=[table_key(t) for t in CLUSTERED_BY_RUN],
        description="Clusters an arrival day of raw.events and facts.retrievals by run: the day's files are "
        "rewritten sorted by run_id into files with disjoint run_id ranges and small row groups, so a context "
        "request for one run opens one file and one row group. Rows are unchanged; snapshots pinned by artifacts "
        "keep their files. Run it for days that have stopped receiving segments (yesterday and older).",
    )
    def context_layout(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        return _cluster_day(context, lake)

    return context_artifacts, context_layout


context_artifacts, context_layout = build_context_assets(ALL_ARRIVAL_DAYS)
