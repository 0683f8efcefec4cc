"""The dbt marts: `dbt build` from the CLI and as Dagster assets, over a demo lake ingested once."""

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from agentlake.config import Settings
from agentlake.log.writer import LogWriter
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.sources.demo import FleetConfig, emit_runs
from agentlake.tables.lake import Lake
from assets.dbt import (
    DBT_PROJECT_DIR,
    MARTS_POOL,
    SNAPSHOTS_READ,
    SOURCE_TABLES,
    build_dbt_assets,
    dbt_project,
    dbt_resource,
)
from platform_defs.resources import LakeResource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
DBT = str(Path(sys.executable).with_name("dbt"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding 150 demo runs, ingested once for the module."""
    home = tmp_path_factory.mktemp("dbt") / "home"
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    with LogWriter(lake.store, "demo", background_flush=False) as writer:
        emit_runs(writer, FleetConfig(), 150, datetime(2026, 11, 20, tzinfo=UTC))
    ingest_pending_then_facts(lake)
    return home


@pytest.fixture(scope="module")
def cli_build(home: Path, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """A plain `dbt build` run by a user inside dbt_project/ (its output kept out of the work tree)."""
    out = tmp_path_factory.mktemp("dbt-cli")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENTLAKE_")}, "AGENTLAKE_HOME": str(home),
           "DBT_TARGET_PATH": str(out / "target"), "DBT_LOG_PATH": str(out / "logs"),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return subprocess.run([DBT, "build"], cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=500)


def _expected_kpis(lake: Lake) -> pl.DataFrame:
    """The KPIs computed from raw.events alone, with polars (not from the fact tables, nor with SQL)."""
    events = pl.from_arrow(lake.table("raw.events").scan().to_arrow())
    assert isinstance(events, pl.DataFrame)
    prices = pl.read_csv(DBT_PROJECT_DIR / "seeds" / "model_prices.csv")
    finished = events.filter(pl.col("type") == "run_finished").select(
        "run_id", "agent_id", "agent_version", pl.col("ts").dt.date().alias("run_day"),
        (pl.col("status") == "ok").alias("ok"))
    tools = events.filter(pl.col("type") == "tool_call").group_by("run_id").agg(
        pl.len().alias("tool_calls"), (pl.col("status") == "error").sum().alias("tool_errors"))
    costs = (events.filter(pl.col("type") == "llm_call").join(prices, on=["provider", "model"], how="left")
             .group_by("run_id").agg(((pl.col("input_tokens") * pl.col("input_usd_per_mtok")
                                       + pl.col("output_tokens") * pl.col("output_usd_per_mtok")) / 1e6).sum()
                                     .alias("cost")))
    scores = events.filter(pl.col("type") == "feedback").group_by("run_id").agg(pl.col("feedback_score").mean())
    runs = finished.join(tools, on="run_id", how="left").join(costs, on="run_id", how="left").join(
        scores, on="run_id", how="left")
    return runs.group_by("run_day", "agent_id", "agent_version").agg(
        pl.len().alias("runs"), pl.col("ok").mean().alias("success_rate"), pl.col("cost").fill_null(0).sum(),
        (pl.col("tool_errors").sum() / pl.col("tool_calls").sum()).alias("tool_error_rate"),
        pl.col("feedback_score").mean()).sort("run_day", "agent_id", "agent_version")


def test_dbt_build_from_the_cli_passes_and_the_kpi_mart_matches_the_raw_events(
        home: Path, cli_build: subprocess.CompletedProcess[str]) -> None:
    assert cli_build.returncode == 0, cli_build.stdout[-3000:] + cli_build.stderr[-2000:]
    assert "ERROR=0" in cli_build.stdout and "PASS=" in cli_build.stdout
    with duckdb.connect(str(home / "marts.duckdb"), read_only=True) as con:
        kpis = con.sql("SELECT run_day, agent_id, agent_version, runs, success_rate, cost_usd AS cost, "
                       "tool_error_rate, feedback_score FROM agent_daily_kpis "
                       "ORDER BY run_day, agent_id, agent_version").pl()
        decisions = con.sql("SELECT count(*) FROM eval_decisions_base").fetchone()
    expected = _expected_kpis(Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)})))
    assert kpis.height == expected.height > 0
    assert kpis["runs"].sum() == 150
    for column in ("run_day", "agent_id", "agent_version", "runs"):
        assert kpis[column].to_list() == expected[column].to_list(), column
    for column in ("success_rate", "cost", "tool_error_rate", "feedback_score"):
        assert kpis[column].to_list() == pytest.approx(expected[column].to_list(), rel=1e-9, nan_ok=True), column
    assert decisions is not None and decisions[0] > 0


def test_the_dbt_connection_reads_no_host_file(home: Path, cli_build: subprocess.CompletedProcess[str],
                                               tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for dbt")
    env = {**os.environ, "AGENTLAKE_HOME": str(home), "DBT_TARGET_PATH": str(tmp_path / "target"),
           "DBT_LOG_PATH": str(tmp_path / "logs"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    shown = subprocess.run([DBT, "show", "--inline", f"select content from read_text('{secret}')"],
                           cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode != 0 and "not for dbt" not in shown.stdout
    assert "Permission Error" in shown.stdout + shown.stderr


@pytest.fixture
def marts_run(home: Path, cli_build: subprocess.CompletedProcess[str],
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Lake, DagsterInstance]]:
    monkeypatch.setenv("AGENTLAKE_HOME", str(home))  # the dbt process's profile finds the marts file there
    with DagsterInstance.ephemeral() as instance:
        yield Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)})), instance


def _materialize_marts(home: Path, instance: DagsterInstance) -> object:
    project = dbt_project()
    return materialize([build_dbt_assets(project)], instance=instance, raise_on_error=False,
                       resources={"dbt": dbt_resource(project), "lake": LakeResource(home=str(home))})


def test_the_marts_assets_materialize_and_record_the_snapshots_they_read(
        home: Path, marts_run: tuple[Lake, DagsterInstance]) -> None:
    lake, instance = marts_run
    result = _materialize_marts(home, instance)
    assert result.success  # type: ignore[attr-defined]
    current = {name: lake.table(name).current_snapshot().snapshot_id for name in SOURCE_TABLES}  # type: ignore[union-attr]
    kpis = instance.get_latest_materialization_event(AssetKey(["marts", "agent_daily_kpis"]))
    assert kpis is not None and kpis.asset_materialization is not None
    assert kpis.asset_materialization.metadata[SNAPSHOTS_READ].value == current
    checks = [e for e in result.get_asset_check_evaluations()]  # type: ignore[attr-defined]
    assert checks and all(c.passed for c in checks)
    assert any(c.asset_key == AssetKey(["raw", "events"]) for c in checks)  # source tests check the lake's assets


def test_a_failing_dbt_test_shows_as_a_failed_asset_check(home: Path, marts_run: tuple[Lake, DagsterInstance]) -> None:
    lake, instance = marts_run
    feedback = lake.table("facts.feedback")
    feedback.append(feedback.scan(limit=1).to_arrow())  # planted: one feedback event twice
    result = _materialize_marts(home, instance)
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]  # type: ignore[attr-defined]
    assert [(c.asset_key, c.check_name) for c in failed] == [
        (AssetKey(["facts", "feedback"]), "source_unique_facts_feedback_event_id")]


def test_every_dbt_step_holds_the_single_slot_of_the_marts_pool(tmp_path: Path) -> None:
    """Any run whose plan includes dbt (the marts job, or a backfill of raw/events, whose checks include
    dbt's source tests) waits for the marts' DuckDB file instead of failing on its lock."""
    import yaml

    from platform_defs.environment import instance_yaml

    marts = build_dbt_assets(dbt_project())
    assert marts.op.pool == MARTS_POOL
    pools = yaml.safe_load(instance_yaml(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})))["concurrency"]["pools"]
    assert pools.get(MARTS_POOL, pools["default_limit"]) == 1
