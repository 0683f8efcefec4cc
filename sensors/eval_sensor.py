"""The sensor that keeps the evaluation assets up to date: after new facts, one evaluation run of their day;
after an evaluation that found feedback for earlier days' decisions, one run of each of those days.

The choice is :func:`next_evaluation`, a pure function over the runs the sensor sees and its cursor
(JSON: the last facts run evaluated, the last evaluation run read, the days still owed an evaluation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.eval import EVAL_LANE, LATE_FEEDBACK_TAG
from platform_defs.jobs import evaluation_job, facts_job
from platform_defs.lanes import lane_tags
from sensors.log_sensor import _IN_FLIGHT

REASON_TAG = "agentlake/eval-reason"
LATE_FEEDBACK = "late-feedback"


@dataclass(frozen=True)
class SeenRun:
    """A run as the sensor sees it: its id, its day, and (an evaluation run) the earlier days it found
    late feedback for, unless it was itself a re-evaluation for late feedback."""

    run_id: str
    day: str | None
    late_feedback_days: tuple[str, ...] = ()

    @classmethod
    def of(cls, run: DagsterRun) -> SeenRun:
        late = () if run.tags.get(REASON_TAG) == LATE_FEEDBACK else tuple(
            d for d in run.tags.get(LATE_FEEDBACK_TAG, "").split(",") if d)
        return cls(run.run_id, run.tags.get("dagster/partition"), late)


@dataclass
class EvalCursor:
    facts_run: str | None = None
    evaluation_run: str | None = None
    owed: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> EvalCursor:
        if not text:
            return cls()
        if not text.startswith("{"):  # the cursor of earlier releases: the facts run evaluated last
            return cls(facts_run=text)
        data = json.loads(text)
        return cls(data.get("facts_run"), data.get("evaluation_run"), list(data.get("owed", [])))

    def dump(self) -> str:
        return json.dumps({"facts_run": self.facts_run, "evaluation_run": self.evaluation_run, "owed": self.owed})


@dataclass(frozen=True)
class Evaluation:
    """What to evaluate now: the day, why, and the key that makes the request once-only."""

    day: str
    reason: str
    run_key: str


def next_evaluation(cursor: EvalCursor, latest_facts: SeenRun | None,
                    evaluations: Sequence[SeenRun]) -> tuple[EvalCursor, Evaluation | str]:
    """The next evaluation to launch (or why none), and the new cursor.

    Args:
        cursor: what the sensor already handled.
        latest_facts: the newest successful facts run.
        evaluations: successful evaluation runs, newest first.
    """
    seen = EvalCursor(cursor.facts_run, cursor.evaluation_run, list(cursor.owed))
    # Late feedback found by evaluations not read yet becomes owed days (once each).
    fresh: list[SeenRun] = []
    for run in evaluations:
        if run.run_id == cursor.evaluation_run:
            break
        fresh.append(run)
    for run in reversed(fresh):
        seen.owed += [d for d in run.late_feedback_days if d not in seen.owed]
    if evaluations:
        seen.evaluation_run = evaluations[0].run_id
    # New facts first: they may make owed days' figures newer still, and their day is the freshest.
    if latest_facts is not None and latest_facts.run_id != cursor.facts_run:
        seen.facts_run = latest_facts.run_id
        if latest_facts.day:
            return seen, Evaluation(latest_facts.day, "facts", f"evaluation-after-{latest_facts.run_id}")
        return seen, f"facts run {latest_facts.run_id} has no arrival day"
    if seen.owed:
        day = seen.owed.pop(0)
        after = seen.evaluation_run or "start"
        return seen, Evaluation(day, LATE_FEEDBACK, f"evaluation-{day}-late-feedback-after-{after}")
    if latest_facts is None:
        return seen, "no facts yet"
    return seen, f"no facts run since {latest_facts.run_id}, which was evaluated, and no late feedback"


def build_evaluation_sensor(interval_s: int) -> SensorDefinition:
    """Every ``interval_s`` seconds, if no evaluation is in flight: evaluate the day of a facts run that
    succeeded since the last request, else a day whose decisions got feedback later. One evaluation at a
    time (it replays every artifact of the day), in the evaluation lane, so it never takes an ingest or
    facts slot."""

    @sensor(
        name="evaluation_sensor",
        job=evaluation_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="After new facts, launches one evaluation run of their arrival day (index the day's context "
        "artifacts, evaluate its decisions, compare versions) in the evaluation lane, one at a time; after "
        "feedback for an earlier day's decisions arrived, evaluates that day again.",
    )
    def evaluation_sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        busy = context.instance.get_runs_count(
            RunsFilter(job_name=evaluation_job.name, statuses=_IN_FLIGHT))
        if busy:
            return SkipReason("an evaluation is in flight; the next tick evaluates what it missed")
        latest = context.instance.get_runs(
            RunsFilter(job_name=facts_job.name, statuses=[DagsterRunStatus.SUCCESS]), limit=1)
        evaluations = context.instance.get_runs(
            RunsFilter(job_name=evaluation_job.name, statuses=[DagsterRunStatus.SUCCESS]), limit=20)
        cursor, chosen = next_evaluation(EvalCursor.parse(context.cursor), SeenRun.of(latest[0]) if latest else None,
                                         [SeenRun.of(r) for r in evaluations])
        context.update_cursor(cursor.dump())
        if isinstance(chosen, str):
            return SkipReason(chosen)
        return RunRequest(run_key=chosen.run_key, partition_key=chosen.day,
                          tags={**lane_tags(EVAL_LANE), REASON_TAG: chosen.reason})

    return evaluation_sensor
