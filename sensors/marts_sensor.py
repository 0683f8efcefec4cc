"""After facts runs, a dbt build of the marts, in the marts lane."""

from __future__ import annotations

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SkipReason,
    run_status_sensor,
)
from dagster._core.definitions.target import ExecutableDefinition  # what request_job= takes

from assets.dbt import MARTS_JOB, MARTS_LANE
from platform_defs.jobs import facts_job
from platform_defs.lanes import lane_tags
from sensors.log_sensor import NOT_READING_YET


def build_marts_sensor(marts_job: ExecutableDefinition, interval_s: int = 5) -> SensorDefinition:
    """After each successful facts run, a marts run, unless one is already waiting to start.

    A marts run pins the tables when it starts, so one that is waiting covers every facts run before
    it: the marts lane holds at most one running and one waiting run, and never the ingest lanes.
    """

    @run_status_sensor(
        name="marts_after_facts_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[facts_job],
        request_job=marts_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launches a dbt build of the marts after each successful facts run, unless one is already "
        "waiting to start.",
    )
    def marts_after_facts_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        waiting = context.instance.get_runs_count(RunsFilter(statuses=NOT_READING_YET, job_name=MARTS_JOB))
        if waiting:
            return SkipReason(f"a marts run is already waiting; it will include facts run {run.run_id}")
        return RunRequest(run_key=f"marts-after-{run.run_id}", tags=lane_tags(MARTS_LANE))

    return marts_after_facts_sensor
