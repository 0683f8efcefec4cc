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
