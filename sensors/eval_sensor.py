"""The sensor that keeps the evaluation assets up to date: after new facts, one evaluation run of their day."""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.eval import EVAL_LANE
from platform_defs.jobs import evaluation_job, facts_job
from platform_defs.lanes import lane_tags
from sensors.log_sensor import _IN_FLIGHT


def build_evaluation_sensor(interval_s: int) -> SensorDefinition:
    """Every ``interval_s`` seconds: if a facts run succeeded since the last request and no evaluation is in
    flight, evaluate that facts run's day. One evaluation at a time (it replays every artifact of the day),
    in the evaluation lane, so it never takes an ingest or facts slot."""

    @sensor(
        name="evaluation_sensor",
        job=evaluation_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="After new facts, launches one evaluation run of their arrival day (index the day's context "
        "artifacts, evaluate its decisions, compare versions) in the evaluation lane, one at a time.",
    )
    def evaluation_sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        latest = context.instance.get_runs(
            RunsFilter(job_name=facts_job.name, statuses=[DagsterRunStatus.SUCCESS]), limit=1)
        if not latest:
            return SkipReason("no facts yet")
        facts_run = latest[0]
        if facts_run.run_id == context.cursor:
            return SkipReason(f"no facts run since {facts_run.run_id}, which was evaluated")
        busy = context.instance.get_runs_count(
            RunsFilter(job_name=evaluation_job.name, statuses=_IN_FLIGHT))
        if busy:
            return SkipReason("an evaluation is in flight; the next tick evaluates what it missed")
        day = facts_run.tags.get("dagster/partition")
        if not day:
            return SkipReason(f"facts run {facts_run.run_id} has no arrival day")
        context.update_cursor(facts_run.run_id)
        return RunRequest(run_key=f"evaluation-after-{facts_run.run_id}", partition_key=day,
                          tags=lane_tags(EVAL_LANE))

    return evaluation_sensor
