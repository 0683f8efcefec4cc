"""Table maintenance assets: compaction and snapshot expiry of the Iceberg tables, in their own lane.

Two assets, one per table set (the raw tables; the fact tables and the context index), each a
thin wrapper over :func:`agentlake.maintenance.maintain.maintain`. A schedule runs them every 10 minutes
in the ``maintenance`` lane (one run at a time, apart from ingestion). Each materialization
shows, per table, the files rewritten, the snapshots expired and the bytes before and after;
each table's own page gets an observation with its figures, but the context index's: its page's
Events tab is where the auditor's walk starts, and the newest event there must stay the index's
materialization, with its day's decisions and their links (its figures are in ``fact_tables``' row).
"""

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from agentlake.config import Settings
from agentlake.context.index import CONTEXT_ARTIFACTS
from agentlake.maintenance.maintain import CompactionPolicy, MaintenanceReport, RetentionPolicy, maintain
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import ALL_TABLES, RAW_TABLES, TableDef
from assets.context import CONTEXT_ARTIFACTS_KEY
from assets.ingest import table_key
from assets.table_metadata import TableMetadata
from platform_defs.resources import LakeResource

MAINTENANCE_LANE = "maintenance"
MAINTENANCE_GROUP = "maintenance"
MAINTENANCE_CRON = "*/10 * * * *"
RAW_MAINTENANCE = AssetKey(["maintenance", "raw_tables"])
OTHER_MAINTENANCE = AssetKey(["maintenance", "fact_tables"])

_COLUMNS = (
    ("table", "string", "the Iceberg table"),
    ("files_rewritten", "int", "small data files compaction replaced"),
    ("files_written", "int", "data files compaction wrote instead"),
    ("snapshots_expired", "int", "snapshots removed by the retention policy"),
    ("snapshots_kept", "int", "snapshots left (pinned ones are read through their pin records)"),
    ("files_deferred", "int", "files only expired snapshots used, kept for the pin retention"),
    ("files_deleted", "int", "files noticed more than the pin retention ago, deleted"),
    ("bytes_deleted", "int", "bytes of those files"),
    ("data_files_before", "int", "live data files before"),
    ("data_files_after", "int", "live data files after"),
    ("bytes_before", "int", "bytes of live data files before"),
    ("bytes_after", "int", "bytes of live data files after"),
    ("metadata_json_bytes_before", "int", "size of the table's metadata.json before"),
    ("metadata_json_bytes_after", "int", "size of the table's metadata.json after"),
    ("rows", "int", "rows in the table (unchanged by maintenance)"),
)
_TOTALS = ("files_rewritten", "files_written", "snapshots_expired", "files_deleted", "bytes_deleted",
           "bytes_before", "bytes_after", "data_files_before", "data_files_after")


class MaintenanceConfig(Config):
    """What a maintenance run does. Empty values mean the deployment's settings
    (``AGENTLAKE_SNAPSHOT_RETENTION_HOURS``, ``AGENTLAKE_SNAPSHOTS_KEEP_LAST``, ``AGENTLAKE_COMPACTION_MIN_FILES``)."""

    retention_hours: float | None = None
    keep_last: int | None = None
    min_files: int | None = None
    delete_files: bool = True


def _other_tables() -> list[TableDef]:
    return [t for t in ALL_TABLES if t not in RAW_TABLES] + [CONTEXT_ARTIFACTS]


def _asset_key(tdef: TableDef) -> AssetKey:
    return CONTEXT_ARTIFACTS_KEY if tdef.name == CONTEXT_ARTIFACTS.name else table_key(tdef)


def metadata_of(reports: Sequence[MaintenanceReport], retention: RetentionPolicy) -> dict[str, Any]:
    """The materialization's metadata: totals, and a row per table."""
    rows = [r.summary() for r in reports]
    meta: dict[str, Any] = {name: sum(row[name] for row in rows) for name in _TOTALS}
    meta["tables"] = MetadataValue.table(
        records=[TableRecord(row) for row in rows],
        schema=TableSchema(columns=[TableColumn(name, kind, description=doc) for name, kind, doc in _COLUMNS]),
    )
    meta["per_table"] = MetadataValue.json({row["table"]: row for row in rows})
    meta["retention"] = f"newer than {retention.keep_hours:g} h, at least the last {retention.keep_last}; pinned ones readable through their pin records"
    meta["seconds"] = round(sum(r.seconds for r in reports), 2)
    return meta


def build_maintenance_assets(settings: Settings) -> list[AssetsDefinition]:
    """The maintenance assets; an empty retention in their config means these settings' retention."""

    def run(context: AssetExecutionContext, config: MaintenanceConfig, lake: LakeResource,
            tables: list[TableDef]) -> Iterator[Any]:
        retention = RetentionPolicy(
            keep_hours=settings.snapshot_retention_hours if config.retention_hours is None else config.retention_hours,
            keep_last=settings.snapshots_keep_last if config.keep_last is None else config.keep_last,
        )
        opened = Lake(lake.settings())
        tables = [t for t in tables if opened.catalog.table_exists(t.name)]  # the context index is made lazily

        def progress(report: MaintenanceReport) -> None:
            row = report.summary()
            context.log.info(
                f"{report.table}: {row['files_rewritten']} files rewritten into {row['files_written']}, "
                f"{row['snapshots_expired']} snapshots expired ({row['snapshots_kept']} kept, {row['files_deferred']} "
                f"files deferred), {row['bytes_before']:,} -> {row['bytes_after']:,} bytes in {report.seconds:.2f}s"
            )
            tdef = next(t for t in tables if t.name == report.table)
            if tdef.name == CONTEXT_ARTIFACTS.name:
                return
            context.log_event(AssetObservation(
                asset_key=_asset_key(tdef),
                metadata={
                    **TableMetadata(table_name=tdef.name, row_count=row["rows"]).as_metadata(),
                    **{f"maintenance/{k}": v for k, v in row.items() if k != "table"},
                },
            ))

        compaction = CompactionPolicy.from_settings(settings)
        if config.min_files is not None:
            compaction = replace(compaction, min_files=config.min_files)
        reports = maintain(
            opened, [t.name for t in tables], retention=retention, compaction=compaction,
            delete_files=config.delete_files, progress=progress,
        )
        yield MaterializeResult(metadata=metadata_of(reports, retention))

    @asset(
        key=RAW_MAINTENANCE,
        deps=[table_key(t) for t in RAW_TABLES],
        group_name=MAINTENANCE_GROUP,
        kinds={"iceberg"},
        description="Compacts the small data files of raw.events and raw.quarantine and expires their snapshots "
        "by the retention policy, never one that a branch or tag references (pinned ones stay readable "
        "through their pin records). Files only expired snapshots used are deleted after the pin retention. "
        "Rows and query results are unchanged.",
    )
    def raw_tables(context: AssetExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> Iterator[Any]:
        yield from run(context, config, lake, list(RAW_TABLES))

    @asset(
        key=OTHER_MAINTENANCE,
        deps=[_asset_key(t) for t in _other_tables()],
        group_name=MAINTENANCE_GROUP,
        kinds={"iceberg"},
        description="Compacts the small data files of the fact tables and the context index and "
        "expires their snapshots by the retention policy, never one that a branch or tag references (pinned "
        "ones stay readable through their pin records).",
    )
    def fact_tables(context: AssetExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> Iterator[Any]:
        yield from run(context, config, lake, _other_tables())

    return [raw_tables, fact_tables]


