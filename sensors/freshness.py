"""Freshness checks on raw/events and the fact tables, and the sensor that evaluates them.

A check fails when the table's newest materialization (for raw/events: its newest publish, since
a batch the quality gate holds is not materialized) is older than the table's promise,
``AGENTLAKE_FRESHNESS_EVENTS_S`` or ``AGENTLAKE_FRESHNESS_FACTS_S``. The sensor runs by default
and launches the checks whenever one could have gone stale, in the freshness lane, so the UI
shows an overdue table without anyone acting. Dagster 1.13 supersedes these checks by
``FreshnessPolicy`` on the assets, which shows a state in the UI but is not an asset check that
passes or fails; the checks are what the issue asks to see.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta

from dagster import (
    AssetChecksDefinition,
    DefaultSensorStatus,
    SensorDefinition,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
)

from agentlake.config import Settings
from agentlake.tables.schemas import EVENTS, FACT_TABLES
from assets.ingest import table_key
from platform_defs.lanes import lane_tags

FRESHNESS_SENSOR = "freshness_checks_sensor"


def build_freshness_checks(settings: Settings) -> Sequence[AssetChecksDefinition]:
    """One freshness check on raw/events and one on each fact table, with the deployment's promises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the supersession notice, explained in the module's docstring
        events = build_last_update_freshness_checks(
            assets=[table_key(EVENTS)], lower_bound_delta=timedelta(seconds=settings.freshness_events_s))
        facts = build_last_update_freshness_checks(
            assets=[table_key(t) for t in FACT_TABLES], lower_bound_delta=timedelta(seconds=settings.freshness_facts_s))
    return [*events, *facts]


def build_freshness_sensor(checks: Sequence[AssetChecksDefinition], interval_s: int = 30) -> SensorDefinition:
    """The sensor that evaluates ``checks`` (running by default), its runs in the freshness lane."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sensor_for_freshness_checks(
            freshness_checks=checks, minimum_interval_seconds=interval_s, name=FRESHNESS_SENSOR,
            default_status=DefaultSensorStatus.RUNNING, tags=lane_tags("freshness"))
