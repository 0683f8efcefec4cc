"""The arrival-day partitions, from the deployment's first day on.

A new deployment shows the days it has lived, not two years of never-materialized partitions.
Every process that loads the definitions (the code server, each run, the daemon's sensors) must
agree on the first partition, so it comes from the store, not the clock: the day the deployment
first loaded its definitions, recorded once (``put_once``) under :data:`FIRST_DAY_KEY`, or the
oldest arrival day in the log if older (imported history is backfilled into its own days). The
start only ever moves back, so a run never sees fewer partitions than the code server that
launched it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
from dagster import DailyPartitionsDefinition

from agentlake.errors import AlreadyExists, ConfigError, ObjectNotFound
from agentlake.log.reader import LogReader
from agentlake.storage.store import ObjectStore

FIRST_DAY_KEY = "deployment/v1/first-day.json"


def arrival_days(start: date) -> DailyPartitionsDefinition:
    """Daily UTC partitions from ``start``; today's exists from midnight UTC."""
    return DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


def recorded_first_day(store: ObjectStore, today: date | None = None) -> date:
    """The day recorded as the deployment's first, recording ``today`` (UTC) if none is yet.

    Raises:
        ConfigError: the record exists but is not AgentLake's (the remedy is in the message).
    """
    try:
        return _read(store)
    except ObjectNotFound:
        pass
    day = today or datetime.now(UTC).date()
    try:
        store.put_once(FIRST_DAY_KEY, orjson.dumps({"first_day": day.isoformat()}))
    except AlreadyExists:  # another process recorded it first: its day is the deployment's
        return _read(store)
    return day


def _read(store: ObjectStore) -> date:
    data = store.get(FIRST_DAY_KEY)
    try:
        return date.fromisoformat(orjson.loads(data)["first_day"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{store.uri(FIRST_DAY_KEY)} does not hold a first day ({{\"first_day\": \"YYYY-MM-DD\"}}); "
            "restore it, or remove it to start the partitions today"
        ) from exc


def first_partition_day(store: ObjectStore, today: date | None = None) -> date:
    """The first arrival-day partition: the recorded first day, or the log's oldest day if older."""
    first = recorded_first_day(store, today)
    days = LogReader(store).days()
    return min(first, date.fromisoformat(days[0])) if days else first
