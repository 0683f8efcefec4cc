"""The write-audit-publish gate of raw.events: real pyiceberg tables, real Great Expectations suites."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from agentlake.config import Settings
from agentlake.gate.publish import audit_records, held, staged_branches
from agentlake.gate.suites import QualityPolicy
from agentlake.log.events import encode_event
from agentlake.log.segments import SegmentInfo
from agentlake.log.writer import LogWriter
from agentlake.pipeline.flow import ingest_then_facts
from agentlake.pipeline.ingest import ingest
from agentlake.pipeline.reconcile import reconcile
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, QUARANTINE

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
POLICY = QualityPolicy(max_quarantine_share=0.3)


class Crash(BaseException):
    """Stands for the process dying at a checkpoint (nothing after it runs)."""


def new_lake(tmp_path: Path) -> Lake:
    return Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home")}))


def event(i: int, prefix: str = "e", **fields: Any) -> bytes:
    base = {"event_id": f"{prefix}{i}", "run_id": f"run-{prefix}{i // 5}", "agent_id": "gate", "type": "llm_call",
            "ts": "2026-11-20T06:59:00Z", "gen_ai.usage.input_tokens": 10, "latency_ms": 5.0, "status": "ok"}
    return encode_event({**base, **fields})


class Log:
    def __init__(self, lake: Lake) -> None:
        self.now = DAY0 + timedelta(hours=7)
        self.writer = LogWriter(lake.store, "gate", background_flush=False, clock=lambda: self.now,
                                signing_key=lake.settings.signing_key)

    def segment(self, lines: list[bytes], minutes: int = 0) -> SegmentInfo:
        self.now = DAY0 + timedelta(hours=7, minutes=minutes)
        for line in lines:
            self.writer.append_line(line)
        seg = self.writer.flush()
        assert seg is not None
        return seg


def gated(run_id: str = "gate", **kw: Any) -> IngestOptions:
    return IngestOptions(run_id=run_id, quality=POLICY, **kw)


def main_ids(lake: Lake) -> list[str]:
    table = lake.table(EVENTS.name)
    if table.current_snapshot() is None:
        return []
    return sorted(table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist())


def test_batch_rule_failure_publishes_nothing_and_keeps_the_batch_inspectable(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)
    log = Log(lake)
    good = log.segment([event(i) for i in range(20)])
    ingest(lake, [good], gated("first"))
    before = lake.table(EVENTS.name).current_snapshot()
    assert before is not None
    # A batch with half its lines broken: the share of quarantined lines is above the threshold.
    bad = log.segment([event(i, "b") for i in range(10)] + [b"{not json"] * 10, minutes=1)
    report = ingest(lake, [bad], gated("second"))
    events = lake.table(EVENTS.name)
    assert events.current_snapshot().snapshot_id == before.snapshot_id  # main did not move
    assert report.segments_held == 1 and report.rows == 0
    (outcome,) = report.gate
    assert outcome.held and "quarantine_share_below_threshold" in outcome.audit.batch_failures
    assert main_ids(lake) == sorted(f"e{i}" for i in range(20))
    # The staged rows can be read by branch and by snapshot id.
    branch = outcome.branch
    assert branch.startswith("agentlake.staged.second.") and branch in staged_branches(events)
    on_branch = events.scan().use_ref(branch).to_arrow().column("event_id").to_pylist()
    by_id = events.scan(snapshot_id=outcome.staged_snapshot_id).to_arrow().column("event_id").to_pylist()
    assert sorted(on_branch) == sorted(by_id) == sorted([f"e{i}" for i in range(20)] + [f"b{i}" for i in range(10)])
    # The held record names the branch and the rule; nothing of the batch reached raw.quarantine.
    record = held(events.properties, good.dt)[bad.key]
    assert record["branch"] == branch and record["failed"] == ["quarantine_share_below_threshold"]
    assert lake.table(QUARANTINE.name).scan().to_arrow().num_rows == 0
    (day,) = reconcile(lake, good.dt)
    # Every line is accounted for (the held ones among them), but the day is not balanced while held.
    assert day.accounted and not day.balanced and not day.segments_missing
    assert (day.segments_held, day.lines_held) == (1, bad.lines)
    # The next ingest of other segments is not blocked (the held batch is retried on its own).
    newer = log.segment([event(i, "n") for i in range(5)], minutes=2)
    report = ingest(lake, [bad, newer], gated("third"))
    assert report.rows == 5 and report.segments_held == 1
    assert len(main_ids(lake)) == 25
    # Fixed (the threshold raised), the re-run publishes it.
    report = ingest(lake, [bad, newer], IngestOptions(run_id="fix",
                                                      quality=QualityPolicy(max_quarantine_share=0.6)))
    assert report.rows == 10 and report.segments_held == 0
    assert len(main_ids(lake)) == 35 and held(lake.table(EVENTS.name).properties, good.dt) == {}
    (day,) = reconcile(lake, good.dt)
    assert day.balanced and day.segments_held == 0 and day.quarantined == 10


def test_bad_rows_are_quarantined_with_their_rule_and_the_rest_publishes(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)
    log = Log(lake)
    lines = [event(i) for i in range(40)]
    lines[3] = event(3, **{"gen_ai.usage.input_tokens": -5})
    lines[7] = event(7, type="teleport")
    lines[11] = event(11, ts="2031-01-01T00:00:00Z")  # years after its segment arrived
    lines[13] = event(13, ts="2019-05-01T00:00:00Z")  # before the fleet existed
    lines[17] = event(17, type="feedback", feedback_score=1.5)
    seg = log.segment(lines)
    report = ingest(lake, [seg], gated())
    assert report.rows == 35 and report.rules_quarantined == 5 and report.quarantined == 5
    assert main_ids(lake) == sorted(f"e{i}" for i in range(40) if i not in (3, 7, 11, 13, 17))
    quarantine = lake.table(QUARANTINE.name).scan().to_arrow().sort_by("line_offset")
    assert quarantine.column("line_offset").to_pylist() == [3, 7, 11, 13, 17]
    assert quarantine.column("rule").to_pylist() == [
        "input_tokens_non_negative", "type_allowed", "ts_not_in_future", "ts_after_fleet_epoch",
        "feedback_score_in_unit_interval"]
    assert quarantine.column("line").to_pylist()[0] == lines[3]  # the line as it is in the log
    (gate,) = report.gate
    results = {r.rule: r for r in gate.audit.results}
    assert results["type_allowed"].unexpected_count == 1 and results["type_allowed"].samples == ["teleport"]
    assert results["row_count_matches_log"].passed
    snapshot = lake.table(EVENTS.name).current_snapshot()
    assert snapshot.summary["agentlake.audit.dropped-rows"] == "5"  # main's head: the branch without them
    assert not staged_branches(lake.table(EVENTS.name))  # the branch was published and removed
    (day,) = reconcile(lake, seg.dt)
    assert day.balanced and (day.rows, day.quarantined) == (35, 5)
    # A re-run adds nothing.
    again = ingest(lake, [seg], gated("again"))
    assert again.rows == 0 and again.segments_skipped == 1 and len(main_ids(lake)) == 35


def ingest_while_another_publishes(tmp_path: Path, first: SegmentInfo, other: SegmentInfo) -> IngestReport:
    """Writer A ingests ``first``; while its batch is audited, writer B ingests and publishes ``other``."""
    audited, other_done = threading.Event(), threading.Event()

    def pause(stage: str) -> None:
        if stage == "after-audit:events" and not audited.is_set():
            audited.set()
            assert other_done.wait(timeout=120)

    result: dict[str, IngestReport] = {}
    writer = threading.Thread(target=lambda: result.setdefault("a", ingest(
        new_lake(tmp_path), [first], gated("a", checkpoint=pause))))
    writer.start()
    assert audited.wait(timeout=120)
    b = ingest(new_lake(tmp_path), [other], gated("b"))  # main moves while A's batch is audited
    other_done.set()
    writer.join(timeout=120)
    assert b.attempts == 1 and b.gate[0].published_snapshot_id is not None
    # A's publish found main moved: it conflicted once, staged afresh and published on its second attempt.
    assert result["a"].attempts == 2, result["a"].as_dict()
    assert result["a"].gate[-1].published_snapshot_id is not None
    return result["a"]


def test_a_commit_that_lands_on_main_while_the_audit_runs_is_not_lost(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)
    log = Log(lake)
    first = log.segment([event(i, "a") for i in range(10)])
    other = log.segment([event(i, "o") for i in range(7)], minutes=1)
    assert ingest_while_another_publishes(tmp_path, first, other).rows == 10
    assert main_ids(lake) == sorted([f"a{i}" for i in range(10)] + [f"o{i}" for i in range(7)])
    events = lake.table(EVENTS.name)
    assert not staged_branches(events)
    (day,) = reconcile(lake, first.dt)
    assert day.balanced and day.rows == 17


def test_an_event_in_two_concurrent_batches_lands_on_main_once(tmp_path: Path) -> None:
    """A producer's retried event in two segments ingested by two runs at once: while A's batch is
    audited, B publishes the event; A's publish must not add it again (it stages afresh instead)."""
    lake = new_lake(tmp_path)
    log = Log(lake)
    first = log.segment([event(i, "a") for i in range(10)])
    other = log.segment([event(i, "a") for i in range(3)] + [event(i, "o") for i in range(4)], minutes=1)
    ingest_while_another_publishes(tmp_path, first, other)
    ids = main_ids(lake)
    assert len(ids) == len(set(ids)) == 14
    assert sorted(ids) == sorted([f"a{i}" for i in range(10)] + [f"o{i}" for i in range(4)])
    assert not staged_branches(lake.table(EVENTS.name))
    (day,) = reconcile(lake, first.dt)
    assert day.balanced and day.rows == 14 and day.duplicates == 3


# The gate's own steps are killed for real (SIGKILL) in test_sigkill_between_write_audit_and_publish.
@pytest.mark.parametrize("stage", ["after-data-files", "before-commit:quarantine"])
def test_a_crash_at_each_step_of_the_gate_never_publishes_part_and_the_rerun_adds_nothing_twice(
    tmp_path: Path, stage: str
) -> None:
    lake = new_lake(tmp_path)
    log = Log(lake)
    lines = [event(i) for i in range(30)]
    lines[4] = event(4, latency_ms=-1.0)
    seg = log.segment(lines + [b"not json"])

    def crash(at: str) -> None:
        if at == stage:
            raise Crash(at)

    with pytest.raises(Crash):
        ingest(new_lake(tmp_path), [seg], gated("crashed", checkpoint=crash))
    ids = main_ids(lake)
    assert ids in ([], sorted(f"e{i}" for i in range(30) if i != 4))  # all or nothing
    report = ingest(new_lake(tmp_path), [seg], gated("rerun"))
    assert main_ids(lake) == sorted(f"e{i}" for i in range(30) if i != 4)
    quarantine = lake.table(QUARANTINE.name).scan().to_arrow()
    assert sorted(quarantine.column("rule").to_pylist()) == ["latency_non_negative", "parse"]
    (day,) = reconcile(lake, seg.dt)
    assert day.balanced, (report.as_dict(), day.as_dict())


def test_override_publishes_a_held_batch_and_leaves_an_audit_record(tmp_path: Path) -> None:
    from agentlake.cli import main

    lake = new_lake(tmp_path)
    log = Log(lake)
    seg = log.segment([event(i) for i in range(4)] + [b"{"] * 6)
    report = ingest(lake, [seg], gated())
    assert report.segments_held == 1 and main_ids(lake) == []
    import io
    import sys

    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        code = main(["publish", "--override", "--reason", "incident 42: parser bug, lines replayed later", "--json",
                     "--day", seg.dt])
    finally:
        sys.stdout = old
    assert code == 0, out.getvalue()
    answer = orjson.loads(out.getvalue().splitlines()[-1])
    assert answer["segments"] == 1 and answer["rows"] == 4
    assert main_ids(lake) == [f"e{i}" for i in range(4)]
    snapshot = lake.table(EVENTS.name).current_snapshot()
    assert snapshot.summary["agentlake.override-reason"].startswith("incident 42")
    (record,) = audit_records(lake.store)
    assert record["reason"].startswith("incident 42") and record["segments"] == [seg.key]
    (day,) = reconcile(lake, seg.dt)
    assert day.balanced and day.segments_held == 0
    assert pc.sum(lake.table(QUARANTINE.name).scan().to_arrow().column("line_offset")).as_py() == sum(range(4, 10))


def test_with_a_signing_key_a_forged_audit_record_or_validation_result_is_named_and_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from agentlake.cli import main
    from agentlake.errors import UntrustedRecord
    from agentlake.gate.publish import AUDIT_RECORDS
    from agentlake.gate.validations import read_validation_at

    monkeypatch.setenv("AGENTLAKE_SIGNING_KEY", "k3y-of-the-gate")
    lake = Lake(Settings.from_env())
    seg = Log(lake).segment([event(i) for i in range(4)] + [b"{"] * 6)
    assert ingest(lake, [seg], gated()).segments_held == 1
    (held_batch,) = held(lake.table(EVENTS.name).properties, seg.dt).values()
    result_key = held_batch["validation_result"]
    assert "signature" in orjson.loads(lake.store.get(result_key))
    assert reconcile(lake, seg.dt)[0].untrusted_records == []
    # Someone with write access to the store makes the held batch's audit look passed.
    path = lake.settings.store_root / result_key
    path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), "success": True}))
    with pytest.raises(UntrustedRecord, match="not AgentLake's"):
        read_validation_at(lake.store, result_key, lake.settings)
    (day,) = reconcile(lake, seg.dt)
    assert not day.balanced and len(day.untrusted_records) == 1 and result_key in day.untrusted_records[0]
    # An override leaves a signed audit record; two forged ones are planted beside it.
    capsys.readouterr()
    assert main(["publish", "--override", "--reason", "incident 43", "--json", "--day", seg.dt]) == 0
    genuine_key = orjson.loads(capsys.readouterr().out.splitlines()[-1])["audit_record"]
    genuine = orjson.loads(lake.store.get(genuine_key))
    folder = genuine_key.rsplit("/", 1)[0]
    unsigned = {k: v for k, v in genuine.items() if k != "signature"}
    lake.store.put_once(f"{folder}/forged-unsigned.json", orjson.dumps({**unsigned, "reason": "approved"}))
    lake.store.put_once(f"{folder}/forged-altered.json", orjson.dumps({**genuine, "reason": "approved"}))
    assert audit_records(lake.store, lake.settings) == [genuine]
    assert len(audit_records(lake.store)) == 3  # read without a key, nothing can be told apart
    days = {d.day: d for d in reconcile(lake)}
    record_day = days[folder.rsplit("dt=", 1)[1]]
    assert not record_day.balanced
    assert sorted(r.split(":")[0] for r in record_day.untrusted_records) == [
        f"{folder}/forged-altered.json", f"{folder}/forged-unsigned.json"]
    assert days[seg.dt].balanced  # published by the override: its held batch's result is no longer relied on
    assert main(["reconcile"]) == 1
    assert f"not AgentLake's: {folder}/forged-unsigned.json" in capsys.readouterr().out
    # Without the key, reconcile is what it was before signing.
    monkeypatch.delenv("AGENTLAKE_SIGNING_KEY")
    assert all(d.untrusted_records == [] and d.balanced for d in reconcile(Lake(Settings.from_env())))
    assert AUDIT_RECORDS in genuine_key


def test_dagster_shows_the_gate_staged_asset_blocking_checks_and_published_asset(tmp_path: Path) -> None:
    from dagster import AssetKey, DagsterInstance, materialize

    from assets.ingest import ingest_log
    from platform_defs.resources import LakeResource

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    lake = new_lake(tmp_path)
    writer = LogWriter(lake.store, "dag", background_flush=False, clock=lambda: today + timedelta(minutes=5))
    ts = (today + timedelta(minutes=4)).isoformat()
    for i in range(6):
        writer.append_line(event(i, "g", ts=ts))
    good = writer.flush()
    writer.clock = lambda: today + timedelta(minutes=6)  # type: ignore[method-assign]
    for i in range(3):
        writer.append_line(event(i, "h", ts=ts))
    for _ in range(7):
        writer.append_line(b"{truncated")
    bad = writer.flush()
    assert good is not None and bad is not None
    instance = DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(home=str(tmp_path / "home"))}

    def run(seg: SegmentInfo) -> Any:
        return materialize([ingest_log], partition_key=seg.dt, resources=resources, instance=instance,
                           run_config={"ops": {"ingest_log": {"config": {"segments": [seg.key]}}}},
                           raise_on_error=False)

    staged_key, events_key = AssetKey(["raw", "events_staged"]), AssetKey(["raw", "events"])
    passed = run(good)
    assert passed.success
    keys = {m.asset_key for m in passed.get_asset_materialization_events() for m in [m.materialization]}
    assert {staged_key, events_key} <= keys
    held_run = run(bad)
    assert not held_run.success  # a failed blocking check fails the step: the run shows red in the UI
    keys = {m.materialization.asset_key for m in held_run.get_asset_materialization_events()}
    assert staged_key in keys and events_key not in keys  # the published asset does not materialize
    checks = {e.check_name: e for e in held_run.get_asset_check_evaluations()}
    failed = checks["quality_quarantine_share_below_threshold"]
    assert not failed.passed and failed.blocking
    assert failed.metadata["branch"].value.startswith("agentlake.staged.")
    assert checks["quality_type_allowed"].passed
    assert main_ids(lake) == [f"g{i}" for i in range(6)]


def test_facts_are_audited_and_an_orphan_fact_batch_is_held(tmp_path: Path) -> None:
    import polars as pl

    from agentlake.gate.batch import audit_fact_batch
    from agentlake.pipeline.facts import update_facts
    from agentlake.tables.files import write_files
    from agentlake.tables.schemas import AGENT_RUNS, LLM_CALLS

    lake = new_lake(tmp_path)
    log = Log(lake)
    lines = [event(i, type="run_started" if i % 5 == 0 else "llm_call") for i in range(20)]
    seg = log.segment(lines)
    report = ingest_then_facts(lake, [seg], IngestOptions(run_id="with-facts", quality=POLICY))  # facts too, audited
    assert report.segments_held == 0 and LLM_CALLS.name in report.snapshots
    assert lake.table(LLM_CALLS.name).scan().to_arrow().num_rows == 16
    # An llm_calls batch whose run is nowhere (not in facts.agent_runs, not among the batch's events)
    # and whose latency is negative is held on a branch; the table's main and ledger do not move.
    table = lake.table(LLM_CALLS.name)
    before = table.current_snapshot().snapshot_id
    rows = table.scan().to_arrow().slice(0, 2)
    bad = pl.from_arrow(rows).with_columns(pl.lit("ghost-run").alias("run_id"), pl.lit(-3.0).alias("latency_ms"))
    files = write_files(table, LLM_CALLS, [bad.to_arrow()])
    outcome = audit_fact_batch(table, seg.dt, [seg], files, pl.Series("run_id", ["run-e0"]),
                               lake.table(AGENT_RUNS.name), run_id="audit", snapshot_properties={})
    assert outcome is not None and outcome.held
    assert {"run_id_known", "latency_ms_non_negative"} <= set(outcome.audit.batch_failures)
    table = lake.table(LLM_CALLS.name)
    assert table.current_snapshot().snapshot_id == before
    assert table.scan().use_ref(outcome.branch).to_arrow().num_rows == 18
    assert held(table.properties, seg.dt)[seg.key]["failed"] == outcome.audit.batch_failures
    assert update_facts(lake, seg.dt, IngestOptions(quality=POLICY)).snapshots == {}  # nothing new to derive


@pytest.mark.parametrize("stage", ["after-stage:events", "after-audit:events", "before-commit:events",
                                   "after-commit:events"])
def test_sigkill_between_write_audit_and_publish(tmp_path: Path, stage: str) -> None:
    """A real kill -9 of an ingesting process at each step of the gate: no partial publish, and
    the re-run (in this process) publishes each row exactly once, with the bad row quarantined once."""
    import subprocess
    import sys

    lake = new_lake(tmp_path)
    log = Log(lake)
    lines = [event(i) for i in range(25)]
    lines[6] = event(6, **{"gen_ai.usage.output_tokens": -1})
    seg = log.segment(lines + [b"[not an object]"])
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gate_worker", "--home", str(tmp_path / "home"), "--kill-at", stage],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    good = sorted(f"e{i}" for i in range(25) if i != 6)
    assert main_ids(lake) in ([], good)  # all or nothing on main
    ingest(new_lake(tmp_path), [seg], gated("rerun"))
    assert main_ids(lake) == good
    rules = lake.table(QUARANTINE.name).scan().to_arrow().column("rule").to_pylist()
    assert sorted(rules) == ["output_tokens_non_negative", "schema"] or sorted(rules) == [
        "output_tokens_non_negative", "parse"]
    (day,) = reconcile(lake, seg.dt)
    assert day.balanced and (day.rows, day.quarantined) == (24, 2)


@pytest.mark.unit
def test_the_suite_finds_the_same_rows_validating_the_whole_frame_or_column_by_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import polars as pl

    from agentlake.gate import suites as quality

    arrival = datetime(2026, 11, 26, tzinfo=UTC)
    n = 60
    rows = pl.DataFrame({
        "event_id": [f"e{i}" for i in range(n)], "run_id": ["r"] * n, "agent_id": ["a"] * n,
        "type": ["llm_call"] * (n - 1) + ["warp"], "ts": [arrival] * (n - 2) + [datetime(2019, 1, 1, tzinfo=UTC)] * 2,
        "status": ["ok"] * n, "input_tokens": [5] * 10 + [-1] + [5] * (n - 11), "output_tokens": [1] * n,
        "latency_ms": [1.0] * n, "feedback_score": [None] * (n - 1) + [2.0],
        "documents": [[{"id": "d", "score": 0.5}]] * n, "arrival": [arrival] * n,
        "segment_key": ["k"] * n, "line_offset": list(range(n)),
    }).with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.col("arrival").dt.cast_time_unit("us"))
    frame = quality.event_audit_frame(rows.to_arrow(), pl.Series(["e3"])).drop("segment_key", "line_offset")
    suite = quality.events_suite(POLICY, expected_rows=n)
    figures = {"quarantine_share": 0.1, "schema_breaking_changes": 0}
    outcomes = []
    for threshold in (10**9, 0):  # the whole frame at once; each column on its own
        monkeypatch.setattr(quality, "PER_COLUMN_ROWS", threshold)
        audit = quality.validate(suite, frame, figures)
        outcomes.append(([(r.rule, r.passed, r.unexpected_count) for r in audit.results], audit.bad_rows))
    assert outcomes[0] == outcomes[1]
    results, bad_rows = outcomes[0]
    assert bad_rows == {10: ["input_tokens_non_negative"], 58: ["ts_after_fleet_epoch"],
                        59: ["type_allowed", "feedback_score_in_unit_interval", "ts_after_fleet_epoch"]}
    failed = {rule for rule, passed, _ in results if not passed}
    assert "event_id_new_to_main" in failed  # e3 is on main already: a batch rule


def test_a_retry_releases_the_good_segments_a_failed_batch_held_back(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)
    log = Log(lake)
    good = log.segment([event(i, "g") for i in range(10)])
    bad = log.segment([event(i, "b") for i in range(2)] + [b"{"] * 18, minutes=1)
    # Together: 18 of 30 lines quarantined, above the 30 % threshold: the whole batch is held.
    report = ingest(lake, [good, bad], gated("together"))
    assert report.segments_held == 2 and main_ids(lake) == []
    # The retry takes the held segments one by one: the good one publishes, the bad one stays held.
    report = ingest(lake, [good, bad], gated("retry"))
    assert report.rows == 10 and report.segments_held == 1
    assert main_ids(lake) == sorted(f"g{i}" for i in range(10))
    assert list(held(lake.table(EVENTS.name).properties, good.dt)) == [bad.key]
    assert len(staged_branches(lake.table(EVENTS.name))) == 1  # superseded branches are removed
    (day,) = reconcile(lake, good.dt)
    assert day.accounted and not day.balanced and (day.segments_held, day.lines_held) == (1, bad.lines)


@pytest.mark.unit
def test_every_expectation_of_a_suite_carries_its_severity_description_and_rule_name() -> None:
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

    from agentlake.gate.suites import BATCH, ROW, events_suite, facts_suite

    events = events_suite(POLICY, expected_rows=3)
    assert isinstance(events.expectations, ExpectationSuite) and events.name == "agentlake.raw.events"
    assert events_suite(POLICY).expectations is events.expectations  # built once per process and policy
    for suite in (events, facts_suite("facts.llm_calls"), facts_suite("facts.agent_runs")):
        for expectation in suite.expectations.expectations:
            assert isinstance(expectation, Expectation)
            assert expectation.description and expectation.meta and expectation.meta["rule"]
            assert expectation.severity.value in ("warning", "critical")
    levels = {r.name: (r.level, r.expectation) for r in events.rules}
    assert levels["type_allowed"] == (ROW, "ExpectColumnValuesToBeInSet")
    assert levels["ts_after_fleet_epoch"] == (ROW, "ExpectColumnValuesToBeBetween")
    assert levels["quarantine_share_below_threshold"] == (BATCH, "ExpectColumnValuesToBeBetween")
    assert levels["row_count_matches_log"] == (BATCH, "ExpectTableRowCountToEqual")
    by_rule = {(e.meta or {})["rule"]: e for e in events.expectations.expectations}
    assert by_rule["type_allowed"].severity.value == "warning"
    assert by_rule["event_id_unique"].severity.value == "critical"
    assert by_rule["quarantine_share_below_threshold"].description == "at most 30% of the batch's lines are quarantined"
    assert {r.level for r in facts_suite("facts.feedback").rules} == {BATCH}  # fact rules all hold the batch


def test_a_staged_snapshot_has_its_validation_result_and_data_docs_page_and_the_check_links_them(
    tmp_path: Path,
) -> None:
    from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize

    from agentlake.gate.validations import data_docs_key, read_validation
    from assets.ingest import ingest_log
    from platform_defs.resources import LakeResource

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    lake = new_lake(tmp_path)
    writer = LogWriter(lake.store, "docs", background_flush=False, clock=lambda: today + timedelta(minutes=5))
    ts = (today + timedelta(minutes=4)).isoformat()
    for i in range(8):
        writer.append_line(event(i, "d", ts=ts, type="teleport" if i == 2 else "llm_call"))
    seg = writer.flush()
    assert seg is not None
    result = materialize([ingest_log], partition_key=seg.dt, resources={"lake": LakeResource(home=str(tmp_path / "home"))},
                         instance=DagsterInstance.ephemeral(),
                         run_config={"ops": {"ingest_log": {"config": {"segments": [seg.key]}}}})
    assert result.success
    (staged,) = [m.materialization for m in result.get_asset_materialization_events()
                 if m.materialization.asset_key == AssetKey(["raw", "events_staged"])]
    snapshot_id = int(staged.metadata["staged_snapshot_id"].value)
    # The GX result of the staged snapshot, as Great Expectations serialises it.
    kept = read_validation(lake.store, EVENTS.name, snapshot_id)
    assert kept["suite_name"] == "agentlake.raw.events" and kept["meta"]["staged_snapshot_id"] == str(snapshot_id)
    assert kept["meta"]["branch"] == staged.metadata["branch"].value
    by_rule = {r["expectation_config"]["meta"]["rule"]: r for r in kept["results"]}
    assert not by_rule["type_allowed"]["success"] and by_rule["type_allowed"]["result"]["unexpected_count"] == 1
    assert by_rule["type_allowed"]["expectation_config"]["severity"] == "warning"
    assert by_rule["row_count_matches_log"]["success"]
    assert by_rule["row_count_matches_log"]["expectation_config"]["kwargs"]["value"] == 8
    # Its Data Docs page, rendered by GX, names the suite and the expectations.
    page = lake.store.get(data_docs_key(EVENTS.name, snapshot_id)).decode()
    assert "agentlake.raw.events" in page and "teleport" in page and "<html" in page.lower()
    # Every check links to both.
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    check = checks["quality_type_allowed"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN  # a row rule warns; the rest published
    assert check.metadata["severity"].value == "warning" and main_ids(lake) == sorted(f"d{i}" for i in range(8) if i != 2)
    assert check.metadata["data_docs"].value == lake.store.uri(data_docs_key(EVENTS.name, snapshot_id))
    assert check.metadata["validation_result"].value.endswith(f"audit/v1/validations/raw.events/{snapshot_id}.json")
    assert staged.metadata["data_docs"].value == check.metadata["data_docs"].value
    # The CLI's --json answer carries the typed outcome as plain JSON, links included.
    writer.clock = lambda: today + timedelta(minutes=6)  # type: ignore[method-assign]
    writer.append_line(event(9, "d", ts=ts))
    more = writer.flush()
    assert more is not None
    (answer,) = orjson.loads(orjson.dumps(ingest(lake, [more], gated("more")).as_dict()))["gate"]
    assert answer["table"] == EVENTS.name and answer["audit"]["passed"] and answer["data_docs"].endswith(".html")


@pytest.mark.unit
def test_the_declared_rules_are_the_rules_of_the_great_expectations_suites() -> None:
    from agentlake.gate.suites import events_rules, events_suite, facts_rules, facts_suite

    assert events_rules(POLICY) == events_suite(POLICY).rules
    for table in ("facts.agent_runs", "facts.llm_calls", "facts.retrievals", "facts.feedback"):
        assert facts_rules(table) == facts_suite(table).rules


def test_maintenance_removes_the_staging_branch_a_killed_run_left_once_no_run_owns_it(tmp_path: Path) -> None:
    from agentlake.maintenance.maintain import RetentionPolicy, maintain, remove_abandoned_branches

    lake = new_lake(tmp_path)
    log = Log(lake)
    seg = log.segment([event(i) for i in range(10)])

    def crash(at: str) -> None:
        if at == "after-stage:events":
            raise Crash(at)  # the run dies between staging and publishing

    with pytest.raises(Crash):
        ingest(new_lake(tmp_path), [seg], gated("killed", checkpoint=crash))
    events = lake.table(EVENTS.name)
    (left,) = staged_branches(events)
    held_seg = log.segment([event(i, "h") for i in range(4)] + [b"{"] * 6, minutes=2)
    ingest(lake, [held_seg], gated("held"))  # a held batch's branch stays for inspection
    assert len(staged_branches(lake.table(EVENTS.name))) == 2
    # Within the grace period the branch may still belong to a run that is auditing: kept.
    assert remove_abandoned_branches(lake, EVENTS.name) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    (report,) = maintain(lake, [EVENTS.name], now=later, retention=RetentionPolicy(keep_hours=0, keep_last=1))
    assert report.expiry.branches_removed == [left]
    remaining = staged_branches(lake.table(EVENTS.name))
    assert remaining == [held(lake.table(EVENTS.name).properties, held_seg.dt)[held_seg.key]["branch"]]
    # The killed run's segment is ingested again by the next run, once.
    ingest(lake, [seg], gated("rerun"))
    assert sorted(i for i in main_ids(lake) if i.startswith("e")) == sorted(f"e{i}" for i in range(10))


def test_the_gate_measures_ts_against_the_real_arrival_not_the_producers_claim(tmp_path: Path) -> None:
    lake = new_lake(tmp_path)
    future = datetime(2099, 1, 1, 7, 0, tzinfo=UTC)
    writer = LogWriter(lake.store, "fastclock", background_flush=False, clock=lambda: future)
    honest = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(20):
        writer.append_line(orjson.dumps({"event_id": f"e{i}", "run_id": "r", "agent_id": "a", "type": "llm_call",
                                         "ts": honest.isoformat()}))
    for i in range(6):
        writer.append_line(orjson.dumps({"event_id": f"f{i}", "run_id": "r", "agent_id": "a", "type": "llm_call",
                                         "ts": (future + timedelta(seconds=i)).isoformat()}))
    seg = writer.flush()
    assert seg is not None and seg.dt == "2099-01-01"
    ingest(lake, [seg], gated("clock"))
    # Events "from 2099" never reach main, whatever the segment's key claims: only the honest ones do.
    assert main_ids(lake) == sorted(f"e{i}" for i in range(20))
    rules = lake.table(QUARANTINE.name).scan().to_arrow().column("rule").to_pylist()
    assert rules == ["ts_not_in_future"] * 6


def _audit_frame(ids: list[str], on_main: list[str] | None = None) -> Any:
    import polars as pl

    from agentlake.gate.suites import EVENT_AUDIT_COLUMNS, event_audit_frame
    from agentlake.tables.schemas import EVENTS as EVENTS_TABLE

    arrival = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    n = len(ids)
    columns = {"event_id": ids, "run_id": ["r"] * n, "agent_id": ["a"] * n, "type": ["llm_call"] * n,
               "ts": [arrival - timedelta(seconds=5)] * n, "status": ["ok"] * n, "input_tokens": [1] * n,
               "output_tokens": [1] * n, "latency_ms": [1.0] * n, "feedback_score": [None] * n,
               "documents": [None] * n, "arrival": [arrival] * n, "segment_key": ["k"] * n,
               "line_offset": list(range(n))}
    schema = EVENTS_TABLE.arrow_schema()
    rows = pa.table({c: pa.array(columns[c], schema.field(c).type) for c in EVENT_AUDIT_COLUMNS})
    return event_audit_frame(rows, pl.Series("event_id", on_main or [], dtype=pl.String),
                             now=arrival).drop("segment_key", "line_offset")


@pytest.mark.parametrize(("rule", "ids", "on_main", "figures"), [
    ("event_id_unique", ["a", "b", "a"], [], {}),
    ("event_id_new_to_main", ["a", "b", "c"], ["b"], {}),
    ("row_count_matches_log", ["a", "b", "c"], [], {"expected": 4}),
    ("quarantine_share_below_threshold", ["a", "b", "c"], [], {"quarantined": 9}),
    ("schema_additive", ["a", "b", "c"], [], {"breaking": 1}),
])
def test_every_batch_rule_fails_the_batch_it_is_about_and_only_that_rule(
        rule: str, ids: list[str], on_main: list[str], figures: dict[str, int]) -> None:
    from agentlake.gate.suites import events_suite, validate

    frame = _audit_frame(ids, on_main)
    quarantined = figures.get("quarantined", 0)
    lines = len(ids) + quarantined
    suite = events_suite(POLICY, expected_rows=figures.get("expected", len(ids)))
    audit = validate(suite, frame, {"lines": lines, "rows": len(ids), "quarantined": quarantined,
                                    "quarantine_share": quarantined / lines,
                                    "schema_breaking_changes": figures.get("breaking", 0)})
    assert audit.batch_failures == [rule], audit.as_dict()
    clean = validate(events_suite(POLICY, expected_rows=3), _audit_frame(["a", "b", "c"]),
                     {"lines": 3, "rows": 3, "quarantined": 0, "quarantine_share": 0.0, "schema_breaking_changes": 0})
    assert clean.passed and not clean.batch_failures


@pytest.mark.unit
def test_two_threads_auditing_at_once_each_get_the_result_of_their_own_batch() -> None:
    """Audits in two threads of one process (two lanes ingesting two lakes) never see each other's rows."""
    from concurrent.futures import ThreadPoolExecutor

    import polars as pl

    from agentlake.gate import suites as quality

    arrival = datetime(2026, 11, 26, tzinfo=UTC)

    def audit(n: int) -> tuple[int, list[str]]:
        rows = pl.DataFrame({
            "event_id": [f"e{n}-{i}" for i in range(n)], "run_id": ["r"] * n, "agent_id": ["a"] * n,
            "type": ["llm_call"] * n, "ts": [arrival] * n, "status": ["ok"] * n, "input_tokens": [5] * n,
            "output_tokens": [1] * n, "latency_ms": [1.0] * n, "feedback_score": [None] * n,
            "documents": [[{"id": "d", "score": 0.5}]] * n, "arrival": [arrival] * n,
            "segment_key": ["k"] * n, "line_offset": list(range(n)),
        }).with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.col("arrival").dt.cast_time_unit("us"))
        frame = quality.event_audit_frame(rows.to_arrow(), pl.Series([], dtype=pl.String)).drop(
            "segment_key", "line_offset")
        audit = quality.validate(quality.events_suite(POLICY, expected_rows=n), frame,
                                 {"quarantine_share": 0.0, "schema_breaking_changes": 0})
        return n, [r.rule for r in audit.results if not r.passed]

    sizes = [20 + 7 * i for i in range(12)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(audit, sizes))
    assert outcomes == [(n, []) for n in sizes]
