"""Backfills never slow ingestion: the lanes, their priorities, niced backfill runs, `agentlake backfill`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, reconstructable

from agentlake.config import Settings
from platform_defs.environment import instance_yaml
from platform_defs.lanes import BACKFILL_TAG, LANE_TAG, LANES, PRIORITY_TAG, lane
from platform_defs.run_launcher import NICE_TAG, WarmRunLauncher
from tests.launcher_jobs import record_niceness_job


def _instance(tmp_path: Path) -> DagsterInstance:
    home = tmp_path / "dagster"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})))
    return DagsterInstance.from_config(str(home))


@pytest.mark.unit
def test_the_shipped_instance_declares_every_lane_with_its_limit_and_ingest_goes_first(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    try:
        config = instance.get_concurrency_config().run_queue_config  # what the daemon's run queue reads
        assert config is not None
        limits = config.tag_concurrency_limits
        assert {"key": LANE_TAG, "value": "ingest", "limit": 2} in limits
        assert {"key": LANE_TAG, "value": "facts", "limit": 1} in limits
        assert {"key": LANE_TAG, "value": "evaluation", "limit": 1} in limits
        assert {"key": LANE_TAG, "value": "maintenance", "limit": 1} in limits
        assert {"key": BACKFILL_TAG, "limit": 2} in limits
        # The cap on all runs never binds before a lane's own limit: slow backfill runs cannot hold
        # the slots that queued ingest runs need.
        assert config.max_concurrent_runs == sum(ln.limit for ln in LANES) == 10
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        # A cancelled run's pool slots are freed by the daemon, not kept for ever.
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        assert isinstance(instance.run_launcher, WarmRunLauncher) and instance.run_launcher._backfill_nice == 10
        # The background lanes run niced too; ingest and facts never are.
        assert instance.run_launcher._lane_nice == {"marts": 5, "evaluation": 5, "sources": 5, "maintenance": 5}
    finally:
        instance.dispose()
    order = ["ingest", "facts", "evaluation", "maintenance", "backfill"]
    priorities = [lane(name).priority for name in order]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(priorities)
    # Dagster gives an untagged run priority 0: no lane but the backfills' may sit that low.
    assert lane("backfill").priority == 0 and all(ln.priority > 0 for ln in LANES if ln.name != "backfill")


@pytest.mark.unit
def test_every_facts_step_holds_the_single_slot_of_the_fact_tables_pool(tmp_path: Path) -> None:
    """A backfill's rebuild of a past day and today's facts runs write the same fact tables: one at a
    time, so the rebuild does not lose every commit race and start over while the facts runs commit."""
    import yaml

    from assets.ingest import FACTS_POOL, build_ingest_assets
    from platform_defs.partitions import arrival_days

    _ingest, facts = build_ingest_assets(arrival_days(date(2026, 1, 1)))
    assert facts.op.pool == FACTS_POOL and _ingest.op.pool != FACTS_POOL
    pools = yaml.safe_load(instance_yaml(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})))["concurrency"]["pools"]
    assert pools.get(FACTS_POOL, pools["default_limit"]) == 1


@pytest.mark.unit
def test_sensor_and_job_runs_carry_their_lane_and_its_priority() -> None:
    from agentlake.log.segments import SegmentInfo
    from platform_defs.jobs import maintenance_job, maintenance_schedule
    from sensors.log_sensor import run_requests

    segment = SegmentInfo.from_key(
        f"log/v1/dt=2026-11-26/hr=09/20261126T090000000000Z-p1-{1:012d}-{10:07d}-{'0' * 16}.ndjson.zst")
    (request,) = run_requests([segment])
    assert request.tags[LANE_TAG] == "ingest" and request.tags[PRIORITY_TAG] == str(lane("ingest").priority)
    for tags in (maintenance_job.tags, maintenance_schedule.tags):
        assert tags[LANE_TAG] == "maintenance" and tags[PRIORITY_TAG] == str(lane("maintenance").priority)


@pytest.mark.integration
def test_backfill_and_background_run_processes_run_niced_and_an_ingest_run_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLAKE_LAUNCHER_TEST_DIR", str(tmp_path))
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    instance = _instance(tmp_path)
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        launcher._preload = ["dagster._cli.api"]  # keep the test's forkserver quick to start
        origin = reconstructable(record_niceness_job).get_python_origin()
        runs = {}
        for name, tags in (("backfill", {BACKFILL_TAG: "b1", **lane("backfill").tags()}),
                           ("ingest", lane("ingest").tags()), ("marts", lane("marts").tags()),
                           # A backfill of an asset whose jobs name a lane still runs at the backfill's niceness.
                           ("backfill-facts", {BACKFILL_TAG: "b2", **lane("facts").tags()})):
            run = instance.create_run_for_job(job_def=record_niceness_job, job_code_origin=origin,
                                              tags={"out_dir": str(tmp_path), **tags})
            instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
            runs[name] = run.run_id
        deadline = time.monotonic() + 90
        while not all((tmp_path / f"{run_id}.nice").exists() for run_id in runs.values()):
            assert time.monotonic() < deadline, "the runs never started"
            time.sleep(0.2)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        niceness = {name: int((tmp_path / f"{run_id}.nice").read_text()) for name, run_id in runs.items()}
        assert niceness == {"backfill": min(19, own + 10), "ingest": own, "marts": min(19, own + 5),
                            "backfill-facts": min(19, own + 10)}
        for run_id in runs.values():
            deadline = time.monotonic() + 60
            while (run := instance.get_run_by_id(run_id)) is not None and not run.is_finished:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert run is not None and run.status == DagsterRunStatus.SUCCESS
        backfill_run = instance.get_run_by_id(runs["backfill"])
        assert backfill_run is not None and NICE_TAG in backfill_run.tags
        assert int(backfill_run.tags[NICE_TAG]) == niceness["backfill"]
        launcher.join(timeout=30)
    finally:
        instance.dispose()


def _freshness(instance: DagsterInstance, settings: Settings) -> dict[str, bool]:
    """Evaluates the freshness checks on ``instance`` as the sensor's runs do; passed, per table."""
    from dagster import AssetSelection, materialize

    from sensors.freshness import build_freshness_checks

    checks = build_freshness_checks(settings)
    result = materialize(list(checks), selection=AssetSelection.checks(*checks), instance=instance)
    return {"/".join(e.asset_key.path): e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.integration
def test_freshness_checks_pass_after_an_ingest_and_fail_once_the_data_is_older_than_the_promise(
    tmp_path: Path,
) -> None:
    from dagster import materialize

    from agentlake.tables.lake import Lake
    from assets.ingest import build_facts, ingest_log
    from platform_defs.resources import LakeResource
    from tests.test_dagster_ingest import TODAY, Producer

    lake = LakeResource(home=str(tmp_path / "home"))
    settings = lake.settings()
    Producer(Lake(settings)).segment(TODAY + timedelta(hours=1))
    instance = DagsterInstance.ephemeral()
    day = TODAY.date().isoformat()
    assert materialize([ingest_log], partition_key=day, resources={"lake": lake}, instance=instance).success
    assert materialize([build_facts], partition_key=day, resources={"lake": lake}, instance=instance).success
    fresh = _freshness(instance, settings)
    assert fresh["raw/events"] is True and fresh["facts/agent_runs"] is True and len(fresh) == 7
    time.sleep(1.5)
    stale = _freshness(instance, settings.model_copy(update={"freshness_events_s": 1.0, "freshness_facts_s": 1.0}))
    assert stale["raw/events"] is False and stale["facts/agent_runs"] is False


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlake.cli", *args], cwd=Path(__file__).resolve().parent.parent,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_agentlake_backfill_refuses_in_one_line_when_no_webserver_answers(tmp_path: Path) -> None:
    from tests.conftest import free_port

    env = {**os.environ, "AGENTLAKE_UI_URL": f"http://127.0.0.1:{free_port()}"}
    out = _cli("backfill", "raw/events", "--from", "2026-11-01", "--to", "2026-11-02", env=env)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("agentlake: the platform's webserver at") and "make run" in out.stderr
    bad = _cli("backfill", "raw/events", "--from", "2026-11-31", "--to", "2026-12-02", env=env)
    assert bad.returncode == 2 and "is not a day" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.unit
def test_a_backfill_is_one_job_s_only_when_the_assets_ops_are_exactly_that_job_s_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from platform_defs import backfill

    ops = {"facts/a": "build_facts", "facts/b": "build_facts", "eval/x": "evaluate", "eval/y": "compare"}
    jobs = {"facts": ["facts/a", "facts/b"], "evaluation": ["eval/x", "eval/y"]}

    def answer(_url: str, query: str, variables: dict[str, object]) -> dict[str, object]:
        assert query == backfill._JOB_ASSETS
        name = variables["job"]["pipelineName"]  # type: ignore[index]
        return {"assetNodes": [{"assetKey": {"path": a.split("/")}, "opNames": [ops[a]]} for a in jobs[name]]}

    def node(asset: str) -> dict[str, object]:
        return {"opNames": [ops[asset]], "repository": {"name": "__repository__", "location": {"name": "agentlake"}},
                "jobNames": ["__ASSET_JOB", *(j for j, assets in jobs.items() if asset in assets)]}

    monkeypatch.setattr(backfill, "graphql", answer)
    # One fact table asked: its op makes both, the facts job's work is both.
    assert backfill._job_doing("u", {"facts/a": node("facts/a")}) == (
        "facts", "__repository__", "agentlake", ["facts/a", "facts/b"])
    # A part of the evaluation job's ops: an asset backfill, not the whole job.
    assert backfill._job_doing("u", {"eval/x": node("eval/x")}) is None
    assert backfill._job_doing("u", {a: node(a) for a in ("eval/x", "eval/y")})[0] == "evaluation"  # type: ignore[index]
    # Two jobs' assets: no one job does them; an asset backfill.
    assert backfill._job_doing("u", {a: node(a) for a in ("facts/a", "eval/x", "eval/y")}) is None


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_a_backfill_launched_by_agentlake_backfill_runs_in_the_backfill_lane_niced(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from dagster import RunsFilter

    from agentlake.storage.store import ObjectStore
    from tests.platform import running_platform
    from tests.test_platform_defs import _segment_on

    home = tmp_path / "home"
    today = datetime.now(UTC).date()
    old = today - timedelta(days=2)
    _segment_on(ObjectStore.local(home / "store"), old.isoformat())  # imported history: its day is a partition
    with running_platform(home, demo_rate=0) as url:
        env = {**os.environ, "AGENTLAKE_HOME": str(home), "AGENTLAKE_UI_URL": url}
        # The code location may still be loading: the first answer may be that the asset is unknown.
        deadline = time.monotonic() + 120
        while True:
            out = _cli("backfill", "raw/events", "raw/events_staged", "raw/quarantine", "--from", old.isoformat(),
                       "--to", (old + timedelta(days=1)).isoformat(), "--json", env=env)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert out.returncode == 0, out.stderr
        launched = json.loads(out.stdout)
        assert launched["url"] == f"{url}/overview/backfills/{launched['backfill_id']}"
        assert launched["partitions"] == [old.isoformat(), (old + timedelta(days=1)).isoformat()]
        # The raw tables are the ingest job's work: the backfill is that job's, so its runs run the job's own
        # checks, not dbt's source tests on raw/events (the marts' dbt step) nor the freshness checks.
        assert launched["job"] == "ingest"
        assert launched["assets"] == ["raw/events", "raw/events_staged", "raw/quarantine"]
        unknown = _cli("backfill", "raw/nothing", "--from", old.isoformat(), "--to", old.isoformat(), env=env)
        assert unknown.returncode == 2 and unknown.stderr.startswith("agentlake: no asset 'raw/nothing'")
        early = (old - timedelta(days=30)).isoformat()
        outside = _cli("backfill", "raw/events", "--from", early, "--to", old.isoformat(), env=env)
        assert outside.returncode == 2 and f"{early} is not a partition of raw/events" in outside.stderr
        instance = DagsterInstance.from_config(str(home / "dagster"))
        try:
            deadline = time.monotonic() + 240
            while True:
                runs = instance.get_runs(RunsFilter(tags={BACKFILL_TAG: launched["backfill_id"]}))
                if len(runs) == 2 and all(run.is_finished for run in runs):
                    break
                assert time.monotonic() < deadline, [(r.run_id, r.status) for r in runs]
                time.sleep(1)
        finally:
            instance.dispose()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for run in runs:
        assert run.status == DagsterRunStatus.SUCCESS and run.job_name == "ingest"
        assert run.tags[PRIORITY_TAG] == str(lane("backfill").priority)
        assert run.tags[NICE_TAG] == str(min(19, own + lane("backfill").nice))


@pytest.mark.unit
def test_the_backfill_command_loads_no_dagster() -> None:
    """The core reaches the Dagster side only here, lazily; what it imports must stay orchestrator-free."""
    code = ("import sys, agentlake.cli, platform_defs.backfill; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_graphql')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"
