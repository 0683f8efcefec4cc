"""Jobs for the warm run launcher's test: loaded by the launched run processes from this module."""

import os
import time
from pathlib import Path

from dagster import OpExecutionContext, in_process_executor, job, op


def _out_dir(context: OpExecutionContext) -> Path:
    """Where the test wants the file: its run tag first, since a warm launcher's forked processes keep
    the environment of the test that started the fork server, not of the test that launched the run."""
    return Path(context.run.tags.get("out_dir") or os.environ["AGENTLAKE_LAUNCHER_TEST_DIR"])


@op
def record_pid(context: OpExecutionContext) -> None:
    """Writes the run's process id where the test can find it, then waits if asked to."""
    out = _out_dir(context) / f"{context.run_id}.pid"
    out.write_text(str(os.getpid()))
    time.sleep(float(context.run.tags.get("sleep", "0")))


@job(executor_def=in_process_executor)
def record_pid_job() -> None:
    record_pid()


@op
def record_niceness(context: OpExecutionContext) -> None:
    """Writes the run process's own OS niceness where the test can read it."""
    out = _out_dir(context) / f"{context.run_id}.nice"
    out.write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))


@job(executor_def=in_process_executor)
def record_niceness_job() -> None:
    record_niceness()
