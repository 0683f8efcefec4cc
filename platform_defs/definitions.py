"""The one Dagster ``Definitions`` of AgentLake, built from explicit lists."""

from __future__ import annotations

from dagster import Definitions

from assets.raw_log import raw_event_log
from platform_defs.environment import build_lake_resource, resolve_settings
from sensors.log_sensor import raw_event_log_sensor


def build_definitions() -> Definitions:
    settings = resolve_settings()
    return Definitions(
        assets=[raw_event_log],
        sensors=[raw_event_log_sensor],
        resources={"lake": build_lake_resource(settings)},
    )


defs = build_definitions()
