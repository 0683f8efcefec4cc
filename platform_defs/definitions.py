"""The one Dagster ``Definitions`` of AgentLake, built from explicit lists."""

from __future__ import annotations

from dagster import Definitions

from assets.context import context_artifacts, context_layout
from assets.ingest import build_facts, ingest_log
from assets.maintenance import build_maintenance_assets
from assets.raw_log import raw_event_log
from platform_defs.environment import build_lake_resource, resolve_settings
from platform_defs.jobs import facts_job, ingest_job, maintenance_job, maintenance_schedule
from sensors.log_sensor import build_facts_sensor, build_log_sensor


def build_definitions() -> Definitions:
    settings = resolve_settings()
    return Definitions(
        assets=[raw_event_log, ingest_log, build_facts, context_artifacts, context_layout, *build_maintenance_assets(settings)],
        jobs=[ingest_job, facts_job, maintenance_job],
        schedules=[maintenance_schedule],
        sensors=[build_log_sensor(settings.ingest_interval_s), build_facts_sensor()],
        resources={"lake": build_lake_resource(settings)},
    )


defs = build_definitions()
