"""The warm run launcher: each run in its own process, forked from a server with the libraries loaded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, reconstructable

from agentlake.config import Settings
from platform_defs.environment import instance_yaml
from platform_defs.run_launcher import PID_TAG, WarmRunLauncher
from tests.launcher_jobs import record_pid_job

pytestmark = pytest.mark.integration


def wait_for(instance: DagsterInstance, run_id: str, statuses: set[DagsterRunStatus], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status in statuses:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def test_runs_execute_in_their_own_warm_processes_and_can_be_terminated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})))
    monkeypatch.setenv("AGENTLAKE_LAUNCHER_TEST_DIR", str(tmp_path))
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    instance = DagsterInstance.from_config(str(home))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert "great_expectations" in launcher._preload  # the run path's heavy imports, done once
        launcher._preload = ["dagster._cli.api"]  # keep the test's forkserver quick to start
        origin = reconstructable(record_pid_job).get_python_origin()

        def launch(**tags: str) -> str:
            run = instance.create_run_for_job(job_def=record_pid_job, job_code_origin=origin,
                                              tags={"out_dir": str(tmp_path), **tags})
            instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
            return run.run_id

        first, second = launch(), launch()
        for run_id in (first, second):
            wait_for(instance, run_id, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == DagsterRunStatus.SUCCESS
            # The op ran in the process the launcher started, not in this one.
            pid = int((tmp_path / f"{run_id}.pid").read_text())
            assert pid == int(run.tags[PID_TAG]) and pid != os.getpid()
        assert (tmp_path / f"{first}.pid").read_text() != (tmp_path / f"{second}.pid").read_text()

        slow = launch(sleep="120")
        deadline = time.monotonic() + 60
        while not (tmp_path / f"{slow}.pid").exists():
            assert time.monotonic() < deadline, "the slow run never started"
            time.sleep(0.2)
        assert launcher.terminate(slow)
        wait_for(instance, slow, {DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE}, timeout=60)
        launcher.join(timeout=30)
    finally:
        instance.dispose()
