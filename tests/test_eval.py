"""Evaluation on a real lake: agents that read their context, replay of every artifact, late feedback, comparison."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentlake import cli
from agentlake.config import Settings
from agentlake.context.query import query
from agentlake.eval.datasets import (
    DatasetTampered,
    create_dataset,
    list_datasets,
    load_dataset,
    rerun_dataset,
)
from agentlake.eval.evaluate import cost_usd, evaluate_day, read_daily
from agentlake.log.writer import LogWriter
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.tables.lake import Lake

pytestmark = pytest.mark.integration


@dataclass
class Home:
    path: Path
    lake: Lake
    day: str


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    status = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return status, orjson.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """From the CLI on the embedded default: demo runs, ingest, more runs that read that context, ingest."""
    path = tmp_path_factory.mktemp("eval") / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("AGENTLAKE_HOME", str(path))
    for seed, runs in ((21, 24), (22, 60)):
        assert cli.main(["demo", "--runs", str(runs), "--seed", str(seed), "--json"]) == 0
        assert cli.main(["ingest", "--json"]) == 0
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(path)}))
    yield Home(path, lake, datetime.now(UTC).date().isoformat())
    mp.undo()


def test_eval_run_replays_every_artifact_and_names_the_one_that_was_tampered_with(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLAKE_HOME", str(home.path))
    status, report = _cli(capsys, "eval", "run", "--day", home.day)
    assert status == 0, report
    assert report["artifacts_replayed"] >= 50 and report["reproducible_rate"] == 1.0
    assert report["not_reproducible"] == []
    versions = {(v["agent_id"], v["agent_version"]): v for v in report["versions"]}
    assert {("support-triage", "2.3.1"), ("research", "0.9.4")} <= set(versions)
    assert all(v["decision_accuracy"] is None or 0 <= v["decision_accuracy"] <= 1 for v in versions.values())
    assert sum(v["artifacts_replayed"] for v in versions.values()) == report["artifacts_replayed"]
    coding = [v for (agent, _), v in versions.items() if agent == "coding"]
    assert coding and all(v["artifacts_replayed"] == 0 and v["cost_per_decision"] > 0 for v in coding)

    rows = query(home.lake, "SELECT attributes FROM facts.decisions")
    assert rows.num_rows == report["decisions"]
    keys = [k for r in rows.to_pylist() if (k := orjson.loads(r["attributes"]).get("context_artifact"))]
    assert len(keys) == report["artifacts_replayed"]  # every decision of a reading kind names its artifact
    # Tamper with one artifact's records: the next evaluation drops below 1.0 and names it (records files are
    # content-addressed, so every artifact holding the same records is named too).
    parts = {k: orjson.loads((home.path / "store" / k).read_bytes())["parts"] for k in keys}
    target = parts[keys[-1]]["documents"]["key"]
    holding = sorted(k for k, p in parts.items() if any(part["key"] == target for part in p.values()))
    records = home.path / "store" / target
    original = records.read_bytes()
    try:
        records.write_bytes(original[:-8] + b"\0" * 8)
        status, report = _cli(capsys, "eval", "run", "--day", home.day)
        assert status == 1
        assert report["reproducible_rate"] < 1.0
        named = sorted((n["artifact_key"], n["verdict"]) for n in report["not_reproducible"])
        assert keys[-1] in holding and named == [(k, "tampered") for k in holding]
    finally:
        records.write_bytes(original)


def test_late_feedback_changes_the_accuracy_and_the_first_result_stays_readable_as_of_its_time(home: Home) -> None:
    first = evaluate_day(home.lake, home.day, run_id="eval-first")
    first_rows = read_daily(home.lake, home.day)
    between = datetime.now(UTC)
    # Feedback for the day's decisions that had none arrives late: every one of them unhelpful.
    unjudged = query(home.lake, "SELECT d.run_id, d.agent_id FROM facts.decisions d ANTI JOIN facts.feedback f "
                                "ON d.run_id = f.run_id").to_pylist()
    assert unjudged
    with LogWriter(home.lake.store, "late", background_flush=False) as writer:
        for row in unjudged:
            writer.append({"event_id": str(uuid.uuid4()), "run_id": row["run_id"], "agent_id": row["agent_id"],
                           "type": "feedback", "ts": (between - timedelta(seconds=1)).isoformat(),
                           "feedback_score": 0.05, "feedback_label": "not_helpful"})
    ingest_pending_then_facts(home.lake)
    second = evaluate_day(home.lake, home.day, run_id="eval-second")
    assert second.judged == first.judged + len(unjudged)
    assert second.decision_accuracy is not None and first.decision_accuracy is not None
    assert second.decision_accuracy < first.decision_accuracy
    assert second.daily_snapshot_id != first.daily_snapshot_id
    # "How good was each version as of then" is answered by the snapshot current then.
    assert read_daily(home.lake, home.day, as_of=between) == first_rows
    now_rows = read_daily(home.lake, home.day)
    assert {r["eval_run_id"] for r in now_rows} == {"eval-second"}
    assert all(orjson.loads(r["pins"])["facts.feedback"] for r in now_rows)
    assert all(r["evaluator_version"] == second.evaluator_version for r in now_rows)


def test_compare_runs_the_candidate_on_the_baselines_exact_contexts_pair_by_pair(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLAKE_HOME", str(home.path))
    status, report = _cli(capsys, "eval", "compare", "--baseline", "2.3.1", "--candidate", "2.4.0", "--day", home.day)
    assert status == 0
    assert report["pairs"] >= 10 and report["same_context"] is True
    assert report["differing"] == len(report["differences"]) > 0
    for pair in report["differences"]:
        assert pair["baseline_label"] != pair["candidate_label"] and pair["same_context"] is True
        assert pair["artifact_key"].startswith("artifacts/v1/dt=")
    # Versions of different agents, or unknown ones, are refused on the command line.
    assert cli.main(["eval", "compare", "--baseline", "2.3.1", "--candidate", "1.0.0"]) == 2
    assert cli.main(["eval", "compare", "--baseline", "9.9.9", "--candidate", "2.4.0"]) == 2


def test_the_eval_assets_materialize_a_day_with_their_headline_figures_downstream_of_facts_and_artifacts(
    home: Home,
) -> None:
    from dagster import AssetKey, DagsterInstance, materialize

    from assets.context import CONTEXT_ARTIFACTS_KEY, context_artifacts
    from assets.eval import eval_comparisons, evaluate_day_assets
    from platform_defs.jobs import evaluation_job
    from platform_defs.resources import LakeResource

    daily = AssetKey(["eval", "daily"])
    assert CONTEXT_ARTIFACTS_KEY in evaluate_day_assets.asset_deps[AssetKey(["eval", "decisions"])]
    assert AssetKey(["facts", "feedback"]) in evaluate_day_assets.asset_deps[AssetKey(["eval", "decisions"])]
    assert evaluation_job.tags["agentlake/lane"] == "evaluation"
    with DagsterInstance.ephemeral() as instance:
        result = materialize([context_artifacts, evaluate_day_assets, eval_comparisons], partition_key=home.day,
                             resources={"lake": LakeResource(home=str(home.path))}, instance=instance)
        assert result.success
        meta = {m.asset_key: {k: v.value for k, v in m.metadata.items()}
                for m in result.get_asset_materialization_events() for m in [m.materialization]}
    assert meta[daily]["reproducible_rate"] == 1.0 and meta[daily]["artifacts_replayed"] >= 50
    assert 0 <= meta[daily]["decision_accuracy"] <= 1
    assert meta[daily]["dagster/partition_row_count"] == len(meta[daily]["versions"])
    comparisons = meta[AssetKey(["eval", "comparisons"])]
    assert comparisons["pairs"] > 0 and comparisons["same_context"] is True


def test_a_dataset_is_a_pinned_query_kept_write_once_and_repeatable(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLAKE_HOME", str(home.path))
    sql = "SELECT run_id, decision_label FROM facts.decisions WHERE agent_id = 'research'"
    status, made = _cli(capsys, "eval", "dataset", "create", "research-decisions", "--sql", sql)
    assert status == 0 and made["rows"] > 0 and made["pins"]["facts.decisions"]
    # New data later does not change the version an experiment named.
    with LogWriter(home.lake.store, "more", background_flush=False) as writer:
        writer.append({"event_id": str(uuid.uuid4()), "run_id": "r-new", "agent_id": "research", "type": "decision",
                       "ts": datetime.now(UTC).isoformat(), "decision_label": "answered"})
    ingest_pending_then_facts(home.lake)
    later = create_dataset(home.lake, "research-decisions", sql)
    assert later.manifest["rows"] == made["rows"] + 1
    status, listed = _cli(capsys, "eval", "dataset", "ls")
    assert [d["version"] for d in listed["datasets"]] == [made["version"], later.version]
    kept = load_dataset(home.lake, made["version"])
    assert kept.records is not None and kept.records.num_rows == made["rows"] and rerun_dataset(home.lake, kept)
    assert load_dataset(home.lake, "research-decisions").version == later.version  # a bare name: the latest
    rows_file = home.path / "store" / kept.manifest["records"]["key"]
    rows_file.write_bytes(rows_file.read_bytes() + b"x")
    with pytest.raises(DatasetTampered, match="altered"):
        load_dataset(home.lake, made["version"])
    assert len(list_datasets(home.lake)) == 2
    assert cli.main(["eval", "dataset", "create", "Bad Name", "--sql", sql]) == 2


@pytest.mark.unit
def test_cost_comes_from_the_price_table_by_model() -> None:
    assert cost_usd({"gpt-4o-mini": {"input": 1_000_000, "output": 1_000_000}}) == pytest.approx(0.75)
    assert cost_usd({"unknown-model": {"input": 1_000_000}}) == pytest.approx(1.0)  # the _default price
    assert cost_usd({}) == 0.0


def test_feedback_arriving_a_day_later_names_the_day_of_the_decisions_it_judges(home: Home) -> None:
    today = datetime.fromisoformat(home.day).replace(tzinfo=UTC)
    tomorrow = (today + timedelta(days=1)).date().isoformat()
    assert evaluate_day(home.lake, tomorrow, run_id="eval-before").late_feedback_days == []
    judged = query(home.lake, "SELECT run_id, agent_id FROM facts.decisions LIMIT 3").to_pylist()
    arrival = today + timedelta(days=1, hours=1)
    with LogWriter(home.lake.store, "later", background_flush=False, clock=lambda: arrival) as writer:
        for row in judged:
            writer.append({"event_id": str(uuid.uuid4()), "run_id": row["run_id"], "agent_id": row["agent_id"],
                           "type": "feedback", "ts": arrival.isoformat(), "feedback_score": 0.9,
                           "feedback_label": "helpful"})
    ingest_pending_then_facts(home.lake)
    report = evaluate_day(home.lake, tomorrow, run_id="eval-after")
    assert report.decisions == 0 and report.late_feedback_days == [home.day]
    assert evaluate_day(home.lake, home.day, run_id="eval-today").late_feedback_days == []


@pytest.mark.unit
def test_the_evaluation_sensor_evaluates_new_facts_first_then_each_day_that_late_feedback_changed() -> None:
    from sensors.eval_sensor import LATE_FEEDBACK, EvalCursor, Evaluation, SeenRun, next_evaluation

    d1, d2 = "2026-11-20", "2026-11-21"
    # A facts run of D2 is evaluated first.
    cursor, chosen = next_evaluation(EvalCursor(), SeenRun("facts-2", d2), [])
    assert isinstance(chosen, Evaluation) and (chosen.day, chosen.reason) == (d2, "facts")
    # That evaluation found feedback for D1's decisions: D1 is evaluated again, once.
    evaluated_d2 = SeenRun("eval-2", d2, (d1,))
    cursor, chosen = next_evaluation(EvalCursor.parse(cursor.dump()), SeenRun("facts-2", d2), [evaluated_d2])
    assert isinstance(chosen, Evaluation) and (chosen.day, chosen.reason) == (d1, LATE_FEEDBACK)
    redone_d1 = SeenRun("eval-1", d1)  # a re-evaluation's own late days are not followed (no cascade)
    cursor, chosen = next_evaluation(cursor, SeenRun("facts-2", d2), [redone_d1, evaluated_d2])
    assert isinstance(chosen, str) and "no late feedback" in chosen
    # New facts come before owed days; the owed day is not forgotten.
    cursor, chosen = next_evaluation(EvalCursor("facts-2", "eval-2", [d1]), SeenRun("facts-3", d2), [evaluated_d2])
    assert isinstance(chosen, Evaluation) and chosen.day == d2 and cursor.owed == [d1]
    cursor, chosen = next_evaluation(cursor, SeenRun("facts-3", d2), [evaluated_d2])
    assert isinstance(chosen, Evaluation) and chosen.day == d1 and cursor.owed == []
    # The cursor of earlier releases (the facts run id) is read as such.
    assert isinstance(next_evaluation(EvalCursor.parse("facts-3"), SeenRun("facts-3", d2), [])[1], str)
    assert next_evaluation(EvalCursor(), None, [])[1] == "no facts yet"


def test_the_lineage_runs_from_the_raw_log_through_facts_and_the_marts_to_the_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import AssetKey

    from platform_defs.definitions import build_definitions

    monkeypatch.setenv("AGENTLAKE_HOME", str(tmp_path / "home"))
    parents: dict[AssetKey, set[AssetKey]] = {}
    for spec in build_definitions().resolve_all_asset_specs():
        parents[spec.key] = {dep.asset_key for dep in spec.deps}

    def path(to: AssetKey, start: AssetKey) -> list[AssetKey] | None:
        if to == start:
            return [start]
        for parent in sorted(parents.get(to, ()), key=str):
            found = path(parent, start)
            if found:
                return [*found, to]
        return None

    mart, decisions = AssetKey(["marts", "eval_decisions_base"]), AssetKey(["eval", "decisions"])
    to_mart = path(mart, AssetKey(["raw", "events"]))
    assert to_mart and any(k.path[0] == "facts" for k in to_mart), to_mart
    assert mart in parents[decisions] and AssetKey(["eval", "decisions"]) in parents[AssetKey(["eval", "daily"])]
    assert path(AssetKey(["eval", "comparisons"]), AssetKey(["raw_event_log"]))


def test_the_eval_mart_carries_what_the_evaluation_scores_decision_by_decision_at_the_same_snapshots(
    home: Home, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import duckdb
    from dagster import AssetKey

    from assets.dbt import DBT_PROJECT_DIR, SOURCE_TABLES
    from assets.eval import EVAL_MART_KEY, evaluate_day_assets

    assert EVAL_MART_KEY in evaluate_day_assets.asset_deps[AssetKey(["eval", "decisions"])]
    report = evaluate_day(home.lake, home.day, run_id="eval-against-mart")
    tables = {name: home.lake.table(name) for name in SOURCE_TABLES}
    pins = {name: {"metadata": t.metadata_location,
                   "snapshot_id": report.pins.get(name) or getattr(t.current_snapshot(), "snapshot_id", None)}
            for name, t in tables.items()}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENTLAKE_")}, "AGENTLAKE_HOME": str(home.path),
           "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs"),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    vars_ = orjson.dumps({"agentlake_pins": {n: p for n, p in pins.items() if p["snapshot_id"]}}).decode()
    built = subprocess.run([str(Path(sys.executable).with_name("dbt")), "build", "--select", "+eval_decisions_base",
                            "--vars", vars_], cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=500)
    assert built.returncode == 0, built.stdout[-3000:]
    with duckdb.connect(str(home.path / "marts.duckdb"), read_only=True) as con:
        mart = {r[0]: r[2:] for r in con.sql(
            "SELECT decision_id, run_status, agent_version, decision_label, artifact_key, correct::int, round(cost_usd, 6), "
            "tool_calls, tool_errors, run_latency_ms FROM eval_decisions_base WHERE run_status IS NOT NULL").fetchall()}
    scored = home.lake.table("eval.decisions").scan(snapshot_id=report.decisions_snapshot_id).to_arrow().to_pylist()
    ours = {r["decision_event_id"]: (r["agent_version"], r["decision_label"], r["artifact_key"], r["correct"],
                                     round(r["cost_usd"], 6), r["tool_calls"], r["tool_errors"], r["latency_ms"])
            for r in scored if r["day"].date().isoformat() == home.day}
    assert len(ours) == report.decisions >= 50
    # A decision of a run that never finished has no outcome in the mart (its figures are nulls there).
    unfinished = {r["event_id"] for r in query(
        home.lake, "SELECT event_id FROM facts.decisions ANTI JOIN facts.agent_runs USING (run_id)").to_pylist()}
    assert set(ours) - set(mart) == unfinished and len(unfinished) < 3
    assert {k: mart[k] for k in ours if k in mart} == {k: v for k, v in ours.items() if k not in unfinished}
