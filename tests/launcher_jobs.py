"""Jobs for the warm run launcher's test: loaded by the launched run processes from this module."""

import os
import time
from pathlib import Path

from dagster import OpExecutionContext, in_process_executor, job, op


@op
def record_pid(context: OpExecutionContext) -> None:
    """Writes the run's process id where the test can find it, then waits if asked to."""
    out = Path(os.environ["AGENTLAKE_LAUNCHER_TEST_DIR"]) / f"{context.run_id}.pid"
    out.write_text(str(os.getpid()))
    time.sleep(float(context.run.tags.get("sleep", "0")))


@job(executor_def=in_process_executor)
def record_pid_job() -> None:
    record_pid()


@op
def record_niceness(context: OpExecutionContext) -> None:
    """Writes the run process's own OS niceness where the test can read it."""
    out = Path(os.environ["AGENTLAKE_LAUNCHER_TEST_DIR"]) / f"{context.run_id}.nice"
    out.write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))


@job(executor_def=in_process_executor)
def record_niceness_job() -> None:
    record_niceness()
