"""A run launcher whose run processes start warm, for fresh tables.

Dagster's default launcher asks the code server for each run, which spawns a new interpreter:
it imports Dagster, then the definitions (pyiceberg, polars, pyarrow, Great Expectations). On
a 2-core machine that is 5 to 10 seconds before a run does anything, longer than ingesting a
minute of events. ``WarmRunLauncher`` forks each run from a multiprocessing forkserver that has
imported all of that once (``preload``), then runs it exactly as ``dagster api execute_run``
does. The forkserver is a fresh interpreter started by the daemon, not a fork of it, so no
thread or connection of the daemon leaks into a run; each run is its own process, as before.

Termination sends the run's process SIGINT (Dagster's interrupt handling marks it canceled).

A backfill's run (tag ``dagster/backfill``) runs at a lower OS priority: its process's niceness
is raised by ``backfill_nice`` (the backfill lane's, see ``platform_defs.lanes``), so on a busy
machine the CPU goes to ingest runs first. So do the runs of the background lanes (marts,
evaluation, sources, maintenance), by their lane's ``lane_nice``. The run process sets it on itself before anything
else, and the launcher sets the same value on it from outside (an absolute value: setting it twice
changes nothing) and records what the OS reports in the run's tag ``agentlake/nice``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from typing import Any

from dagster import Array, Field, Map
from dagster._core.launcher.base import LaunchRunContext, RunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from platform_defs.lanes import run_nice

PID_TAG = "agentlake/run_worker_pid"
NICE_TAG = "agentlake/nice"
# Imported by the forkserver before any run: Dagster's run entry point and what it loads.
BASE_PRELOAD = ("dagster._cli.api",)  # always, whatever the config adds


def _run_worker(input_json: str, niceness: int | None = None) -> None:
    """What ``dagster api execute_run`` does, in a process forked from the warm server."""
    import sys

    if niceness is not None:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)

    from dagster._cli.api import execute_run_command

    assert execute_run_command.callback is not None
    sys.argv = ["dagster-run-worker"]
    execute_run_command.callback(input_json, None)


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in its own process, forked from a server with the definitions imported."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload: Sequence[str] = (),
                 backfill_nice: int = 0, lane_nice: Mapping[str, int] | None = None) -> None:
        self._inst_data = inst_data
        self._backfill_nice = backfill_nice
        self._lane_nice = dict(lane_nice or {})
        self._preload = [*BASE_PRELOAD, *preload]
        self._mp: ForkServerContext | None = None
        self._processes: dict[str, Any] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> Any:
        return {"preload": Field(Array(str), is_required=False, default_value=[],
                                 description="Modules the forkserver imports before forking runs."),
                "backfill_nice": Field(int, is_required=False, default_value=0,
                                       description="Added to the OS niceness of a backfill's run processes."),
                "lane_nice": Field(Map(str, int), is_required=False, default_value={},
                                   description="Added to the OS niceness of the run processes of a lane, "
                                               "by the value of its agentlake/lane tag.")}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload=config_value.get("preload") or [],
                   backfill_nice=int(config_value.get("backfill_nice") or 0),
                   lane_nice=config_value.get("lane_nice") or {})

    def _context(self) -> ForkServerContext:
        if self._mp is None:
            mp = multiprocessing.get_context("forkserver")
            mp.set_forkserver_preload(self._preload)
            self._mp = mp
        return self._mp

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no job origin to load its code from")
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref())
        niceness = None
        if added := run_nice(run.tags, self._backfill_nice, self._lane_nice):
            niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + added)
        process = self._context().Process(target=_run_worker, args=(serialize_value(args), niceness),
                                          name=f"dagster-run-{run.run_id}")
        process.start()
        tags = {PID_TAG: str(process.pid)}
        if niceness is not None and process.pid is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
                tags[NICE_TAG] = str(os.getpriority(os.PRIO_PROCESS, process.pid))
            except ProcessLookupError:  # the run already ended: it set its niceness itself
                pass
        self._instance.add_run_tags(run.run_id, tags)
        self._processes[run.run_id] = process
        self._reap()

    def _reap(self) -> None:
        for run_id, process in list(self._processes.items()):
            if not process.is_alive():
                process.join(0)
                del self._processes[run_id]

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or PID_TAG not in run.tags:
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[PID_TAG]), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def join(self, timeout: int = 30) -> None:
        for process in list(self._processes.values()):
            process.join(timeout)
        self._reap()
