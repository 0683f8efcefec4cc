"""The sensor that watches the raw event log and launches ingest runs for new segments."""


import hashlib

import orjson
from dagster import (
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)

from agentlake.log.reader import LogCursor
from agentlake.log.segments import SegmentInfo
from assets.ingest import INGEST_LANE_TAG
from assets.raw_log import RAW_EVENT_LOG
from platform_defs.jobs import facts_job, ingest_job
from platform_defs.lanes import lane_tags
from platform_defs.resources import LakeResource

MAX_SEGMENTS_PER_RUN = 500
# Ingest runs in flight at once (the ingest lane's limit in the instance config). Two let the
# next run's process start while the previous one commits; their commits never double a row
# (each re-checks the ledger). At the default tick (5 s, as often as Dagster's sensor daemon
# evaluates) a run's life (about 10 s on two cores under load) spans two ticks.
MAX_INGEST_RUNS_IN_FLIGHT = 2

_IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED]
# A facts run in one of these states has not read raw.events yet: it will see the latest ingest.
NOT_READING_YET = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def run_requests(new: list[SegmentInfo]) -> list[RunRequest]:
    """One run per arrival day (and per 500 segments), keyed by its segments so a repeat is deduplicated."""
    by_day: dict[str, list[str]] = {}
    for seg in new:
        by_day.setdefault(seg.dt, []).append(seg.key)
    requests = []
    for day, keys in sorted(by_day.items()):
        keys.sort()
        for i in range(0, len(keys), MAX_SEGMENTS_PER_RUN):
            part = keys[i : i + MAX_SEGMENTS_PER_RUN]
            digest = hashlib.sha256("\n".join(part).encode()).hexdigest()[:20]
            requests.append(
                RunRequest(
                    run_key=f"ingest-{day}-{digest}",
                    partition_key=day,
                    run_config={"ops": {"ingest_log": {"config": {"segments": part}}}},
                    tags={**lane_tags("ingest"), "dagster/max_retries": "3"},
                )
            )
    return requests


def build_log_sensor(interval_s: int) -> SensorDefinition:
    """The sensor, ticking every ``interval_s`` seconds: each tick's segments become one commit per table."""

    @sensor(
        name="raw_event_log_sensor",
        job=ingest_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Lists segments that arrived since its cursor (never skipping a late upload), records an "
        "observation of the raw event log and launches one ingest run per arrival day for them.",
    )
    def raw_event_log_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult | SkipReason:
        # With the ingest lane full, new segments wait for a later tick: they then go in one run
        # together, so the ingest lane never builds a backlog of small runs.
        busy = context.instance.get_runs_count(
            RunsFilter(statuses=_IN_FLIGHT, tags={INGEST_LANE_TAG: "ingest"}, job_name=ingest_job.name)
        )
        if busy >= MAX_INGEST_RUNS_IN_FLIGHT:
            return SkipReason(f"{busy} ingest runs in flight; new segments go in the next run")
        state = orjson.loads(context.cursor) if context.cursor else {}
        cursor = LogCursor.from_json(state.get("log"))
        new, cursor = lake.log_reader().poll(cursor)
        if not new:
            return SkipReason("no new log segments")
        totals = {
            "segments": state.get("segments", 0) + len(new),
            "bytes": state.get("bytes", 0) + sum(seg.size or 0 for seg in new),
            "lines": state.get("lines", 0) + sum(seg.lines for seg in new),
        }
        newest = max(max(seg.key for seg in new), state.get("newest") or "")
        observation = AssetObservation(
            asset_key=RAW_EVENT_LOG,
            metadata={
                "segment_count": totals["segments"],
                "bytes": totals["bytes"],
                "lines": totals["lines"],
                "newest_key": newest,
                "new_segments": len(new),
            },
        )
        next_state = {"log": cursor.to_json(), **totals, "newest": newest}
        return SensorResult(
            run_requests=run_requests(new), asset_events=[observation], cursor=orjson.dumps(next_state).decode()
        )

    return raw_event_log_sensor


def build_facts_sensor(interval_s: int = 2) -> SensorDefinition:
    """After each successful ingest run, a facts run for its arrival day, in the facts lane.

    The facts are derived in their own runs so the ingest lane is free again as soon as raw.events
    is committed. A facts run that has not started reading yet covers every ingest before it, so a
    new one is only requested when none is waiting for that day: the facts lane never piles up.
    """

    @run_status_sensor(
        name="facts_after_ingest_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest_job],
        request_job=facts_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launches a facts run for the arrival day of each successful ingest run, unless one for "
        "that day is already waiting to start.",
    )
    def facts_after_ingest_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        day = run.tags.get("dagster/partition")
        if not day:
            return SkipReason(f"ingest run {run.run_id} has no arrival day")
        waiting = context.instance.get_runs_count(
            RunsFilter(statuses=NOT_READING_YET, job_name=facts_job.name, tags={"dagster/partition": day})
        )
        if waiting:
            return SkipReason(f"a facts run for {day} is already waiting; it will include run {run.run_id}")
        return RunRequest(
            run_key=f"facts-after-{run.run_id}",
            partition_key=day,
            run_config={"ops": {"build_facts": {"config": {"rebuild": False}}}},
            tags={**lane_tags("facts"), "dagster/max_retries": "3"},
        )

    return facts_after_ingest_sensor
