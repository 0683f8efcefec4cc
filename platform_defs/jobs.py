"""Every job and schedule of AgentLake, in one place: what runs, in which lane, on what cadence.

Sensors (``sensors/``) decide when ingest and facts runs start; these definitions say what they run.
Jobs select assets by key and take their partitions from the assets of the Definitions they are in
(the deployment's arrival days, see ``platform_defs.partitions``).
"""

from __future__ import annotations

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from assets.context import CONTEXT_ARTIFACTS_KEY
from assets.eval import EVAL_LANE, eval_comparisons, evaluate_day_assets
from assets.ingest import build_facts, ingest_log
from assets.maintenance import MAINTENANCE_CRON, MAINTENANCE_LANE, OTHER_MAINTENANCE, RAW_MAINTENANCE
from assets.sources import SOURCES_CRON, SOURCES_GROUP, SOURCES_LANE
from platform_defs.lanes import lane_tags


def own_work(*assets: AssetsDefinition) -> AssetSelection:
    """These assets with their own checks only. Selecting assets by key would also pull in every check
    other definitions place on them: dbt's source tests (run by the marts job, in its lane) and the
    freshness checks (run by their own sensor). An ingest run that ran dbt would wait on the marts'
    DuckDB file and could fail on its lock."""
    return (AssetSelection.assets(*assets).without_checks()
            | AssetSelection.checks(*(key for a in assets for key in a.check_keys)))


ingest_job = define_asset_job(
    "ingest",
    selection=own_work(ingest_log),
    # The step runs in the run's own process: no second process start, fresher tables.
    executor_def=in_process_executor,
    description="Ingest log segments of one arrival day into raw.events and raw.quarantine.",
)

facts_job = define_asset_job(
    "facts",
    selection=own_work(build_facts),
    executor_def=in_process_executor,
    description="Bring one arrival day's fact tables up to date with raw.events (launched after each ingest).",
)

evaluation_job = define_asset_job(
    "evaluation",
    selection=[CONTEXT_ARTIFACTS_KEY, *sorted(evaluate_day_assets.keys), *sorted(eval_comparisons.keys)],
    executor_def=in_process_executor,
    tags=lane_tags(EVAL_LANE),
    description="Index one arrival day's context artifacts, evaluate its decisions (replaying every artifact) and "
    "compare the rolling-out versions on the same contexts, in the evaluation lane (launched after new facts).",
)


maintenance_job = define_asset_job(
    "maintenance",
    selection=[RAW_MAINTENANCE, OTHER_MAINTENANCE],
    executor_def=in_process_executor,
    tags=lane_tags(MAINTENANCE_LANE),
    description="Table maintenance of every table: compaction, then snapshot expiry (its own lane, one run at a time).",
)

maintenance_schedule = ScheduleDefinition(
    name="table_maintenance_schedule",
    job=maintenance_job,
    cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    tags=lane_tags(MAINTENANCE_LANE),
    description="Runs table maintenance every 10 minutes, apart from ingestion, in the maintenance lane.",
)

sources_job = define_asset_job(
    "sources",
    selection=AssetSelection.groups(SOURCES_GROUP).materializable(),  # the configured ext tables, with their checks
    executor_def=in_process_executor,
    tags=lane_tags(SOURCES_LANE),
    description="Load the external sources with dlt and publish each ext table through its gate in one commit, "
    "in the sources lane.",
)

sources_schedule = ScheduleDefinition(
    name="sources_schedule",
    job=sources_job,
    cron_schedule=SOURCES_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    tags=lane_tags(SOURCES_LANE),
    description="Loads the external sources every 5 minutes, in the sources lane.",
)
