"""The one Dagster ``Definitions`` of AgentLake, built from explicit lists."""

from __future__ import annotations

from dagster import Definitions, definitions

from agentlake.storage.store import ObjectStore
from assets.context import build_context_assets
from assets.dbt import build_dbt_assets, build_marts_job, dbt_project, dbt_resource
from assets.eval import build_eval_assets
from assets.ingest import build_ingest_assets
from assets.maintenance import build_maintenance_assets
from assets.raw_log import raw_event_log
from assets.sources import build_source_assets
from platform_defs.environment import build_lake_resource, resolve_settings
from platform_defs.jobs import (
    evaluation_job,
    facts_job,
    ingest_job,
    maintenance_job,
    maintenance_schedule,
    sources_job,
    sources_schedule,
)
from platform_defs.partitions import arrival_days, first_partition_day
from sensors.eval_sensor import build_evaluation_sensor
from sensors.freshness import build_freshness_checks, build_freshness_sensor
from sensors.log_sensor import build_facts_sensor, build_log_sensor
from sensors.marts_sensor import build_marts_sensor


def build_definitions() -> Definitions:
    """AgentLake's definitions for the deployment the environment describes.

    Reads the store (the first partition day, see ``platform_defs.partitions``): call it when the
    definitions load, never at import.
    """
    settings = resolve_settings()
    days = arrival_days(first_partition_day(ObjectStore.from_settings(settings)))
    project = dbt_project()
    marts = build_dbt_assets(project)
    marts_job = build_marts_job(marts)
    freshness = build_freshness_checks(settings)
    return Definitions(
        assets=[raw_event_log, *build_ingest_assets(days), *build_context_assets(days),
                *build_maintenance_assets(settings), marts, *build_eval_assets(days),
                *build_source_assets(settings)],
        asset_checks=freshness,
        jobs=[ingest_job, facts_job, maintenance_job, marts_job, evaluation_job, sources_job],
        schedules=[maintenance_schedule, sources_schedule],
        sensors=[build_log_sensor(settings.ingest_interval_s), build_facts_sensor(), build_marts_sensor(marts_job),
                 build_freshness_sensor(freshness), build_evaluation_sensor(settings.eval_interval_s)],
        resources={"lake": build_lake_resource(settings), "dbt": dbt_resource(project)},
    )


@definitions
def defs() -> Definitions:
    """The code location ``agentlake`` (workspace.yaml, ``dg``): built when Dagster loads it, not at import."""
    return build_definitions()
