"""The Dagster side's environment resolution: one Definitions, resources and instance config."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, EnvVar

from agentlake.config import Settings
from agentlake.errors import ConfigError
from agentlake.storage.store import ObjectStore
from agentlake.tables.lake import Lake
from platform_defs.environment import build_lake_resource, instance_yaml, resolve_settings
from platform_defs.partitions import FIRST_DAY_KEY, first_partition_day, recorded_first_day

pytestmark = pytest.mark.unit


def test_embedded_default_needs_no_variable(tmp_path: Path) -> None:
    settings = resolve_settings({"AGENTLAKE_HOME": str(tmp_path)})
    assert settings.store == "local" and settings.s3 is None
    assert settings.resolved_catalog_uri == f"sqlite:///{tmp_path / 'catalog.db'}"
    lake = build_lake_resource(settings)
    assert lake.s3_settings() is None and lake.settings().store_root == tmp_path / "store"


def test_unknown_store_and_missing_bucket_raise() -> None:
    with pytest.raises(ConfigError, match="not a known store"):
        resolve_settings({"AGENTLAKE_STORE": "gcs"})
    with pytest.raises(ConfigError, match="AGENTLAKE_S3_BUCKET"):
        resolve_settings({"AGENTLAKE_STORE": "s3"})


def test_s3_secrets_reach_dagster_as_env_vars_never_values(tmp_path: Path) -> None:
    env = {
        "AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": "lake",
        "AGENTLAKE_S3_ENDPOINT": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
    }
    lake = build_lake_resource(Settings.from_env(env))
    assert lake.s3 is not None
    assert lake.s3.aws_secret_access_key == EnvVar("AWS_SECRET_ACCESS_KEY")
    assert "very-secret-value" not in repr(lake) and "very-secret-value" not in repr(Settings.from_env(env))


def test_s3_deployment_keeps_run_logs_beside_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": "lake",
           "AGENTLAKE_S3_ENDPOINT": "http://127.0.0.1:9000"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    text = instance_yaml(settings)
    assert "env: AGENTLAKE_S3_BUCKET" in text and "env: AGENTLAKE_S3_ENDPOINT" in text
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(text)
    instance = DagsterInstance.from_config(str(home))
    try:
        manager = instance.compute_log_manager
        assert type(manager).__name__ == "S3ComputeLogManager"
        assert manager._s3_bucket == "lake"  # the bucket came from the environment, by name
        queue = instance.get_concurrency_config().run_queue_config  # what the daemon's run queue reads
        assert queue is not None
        limits = queue.tag_concurrency_limits
        assert {"key": "agentlake/lane", "value": "ingest", "limit": 2} in limits
        assert {"key": "agentlake/lane", "value": "facts", "limit": 1} in limits
    finally:
        instance.dispose()


def test_embedded_instance_uses_sqlite_under_the_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(settings))
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.compute_log_manager).__name__ != "S3ComputeLogManager"
        assert (home / "storage" / "history").is_dir()  # Dagster's SQLite storage, under the home
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    finally:
        instance.dispose()


def test_embedded_definitions_load_without_dagster_aws(tmp_path: Path) -> None:
    """Every run process imports the definitions: on the embedded default they skip dagster-aws, boto3
    and Great Expectations (the gate imports it when it first validates), whose imports cost seconds."""
    import subprocess
    import sys

    code = ("import sys, platform_defs.definitions as d; d.build_definitions(); "
            "print(sorted({'dagster_aws', 'boto3', 'great_expectations'} & set(sys.modules)))")
    env = {"PATH": "/usr/bin:/bin", "AGENTLAKE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_dg_cli_checks_and_lists_the_definitions(tmp_path: Path) -> None:
    """`dg check defs` (as CI runs it) and `dg list defs` load the project from pyproject's [tool.dg]."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    dg = str(Path(sys.executable).with_name("dg"))
    env = {**os.environ, "AGENTLAKE_HOME": str(tmp_path / "home")}
    check = subprocess.run([dg, "check", "defs"], cwd=root, env=env, capture_output=True, text=True, timeout=200)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=200)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    defs = json.loads(listed.stdout)
    assert "ingest" in {job["name"] for job in defs["jobs"]}
    assert "raw/events" in {asset["asset_key"] for asset in defs["assets"]}
    assert "raw_event_log_sensor" in {sensor["name"] for sensor in defs["sensors"]}


def test_importing_the_definitions_opens_nothing_they_are_built_when_dagster_loads_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import platform_defs.definitions"
    env = {"PATH": "/usr/bin:/bin", "AGENTLAKE_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env, check=True)
    assert not (tmp_path / "home").exists()  # no store, no catalog, no first-day record touched


def _segment_on(store: ObjectStore, day: str) -> int:
    """Writes one segment of demo events arriving on ``day``; returns its line count."""
    from datetime import UTC, datetime

    from agentlake.log.writer import LogWriter
    from tests.corpus import demo_lines

    arrival = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
    writer = LogWriter(store, "old", background_flush=False, clock=lambda: arrival)
    lines = list(demo_lines(1, 1, arrival))
    for line in lines:
        writer.append_line(line)
    assert writer.flush() is not None
    return len(lines)


def test_partitions_start_at_the_deployments_first_day_recorded_once(tmp_path: Path) -> None:
    from datetime import date

    store = ObjectStore.local(tmp_path / "store")
    assert first_partition_day(store, today=date(2026, 6, 10)) == date(2026, 6, 10)
    assert store.exists(FIRST_DAY_KEY)
    # Every later process (another day, another run) reads the same first day: it is write-once.
    assert recorded_first_day(store, today=date(2026, 6, 12)) == date(2026, 6, 10)
    assert first_partition_day(store, today=date(2026, 7, 1)) == date(2026, 6, 10)
    # Imported history older than the deployment keeps its own days as partitions.
    _segment_on(store, "2026-03-04")
    assert first_partition_day(store, today=date(2026, 7, 1)) == date(2026, 3, 4)
    store.put_overwrite(FIRST_DAY_KEY, b"not json")
    with pytest.raises(ConfigError, match="first-day.json"):
        recorded_first_day(store)


@pytest.mark.integration
def test_a_new_deployment_shows_only_its_days_and_can_still_ingest_older_imported_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    from dagster import DagsterInstance

    from platform_defs.definitions import build_definitions

    home = tmp_path / "home"
    monkeypatch.setenv("AGENTLAKE_HOME", str(home))
    today = datetime.now(UTC).date()
    assert build_definitions().resolve_job_def("ingest").partitions_def.get_first_partition_key() == today.isoformat()
    old_day = (today - timedelta(days=40)).isoformat()
    lines = _segment_on(ObjectStore.local(home / "store"), old_day)
    defs = build_definitions()
    for job in ("ingest", "facts"):
        assert defs.resolve_job_def(job).partitions_def.get_first_partition_key() == old_day
    assert defs.resolve_assets_def(AssetKey(["context_artifacts"])).partitions_def.get_first_partition_key() == old_day
    result = defs.resolve_job_def("ingest").execute_in_process(partition_key=old_day,
                                                               instance=DagsterInstance.ephemeral())
    assert result.success
    assert Lake(resolve_settings()).table("raw.events").scan().count() == lines
