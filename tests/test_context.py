"""Context artifacts, time travel and replay, on real Iceberg tables, a real store and Dagster."""

from __future__ import annotations

import io
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentlake.config import S3Settings, Settings
from agentlake.context.asof import snapshot_at
from agentlake.context.assembly import (
    ArtifactTampered,
    ContextRequest,
    InvalidRequest,
    assemble,
    load_artifact,
    records_hash,
    write_artifact,
)
from agentlake.context.pins import PIN_GRANULARITY_MS, pin_in_force, pins_of
from agentlake.context.query import SnapshotGone, connect, query
from agentlake.context.replay import DIFFERS, REPRODUCIBLE, SOURCE_CHANGED, TAMPERED, UNREPLAYABLE, replay
from agentlake.context.sandbox import QueryRefused
from agentlake.errors import AlreadyExists
from agentlake.log.writer import LogWriter
from agentlake.pipeline.facts import rebuild_facts
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.pipeline.stage import IngestOptions
from agentlake.sources import helpdesk
from agentlake.tables.lake import Lake
from tests.helpdesk_rows import publish_helpdesk, set_ticket

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def _lake(tmp_path: Path) -> Lake:
    return Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home")}))


def _run_events(run_id: str, start: datetime, *, docs: int = 2, finished: bool = True) -> list[dict[str, Any]]:
    ts = [start + timedelta(seconds=i) for i in range(6)]
    events: list[dict[str, Any]] = [
        {"event_id": f"{run_id}-start", "run_id": run_id, "agent_id": "triage", "type": "run_started", "ts": ts[0]},
        {"event_id": f"{run_id}-llm", "run_id": run_id, "agent_id": "triage", "type": "llm_call", "ts": ts[1],
         "gen_ai.request.model": "m1", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5},
        {"event_id": f"{run_id}-ret", "run_id": run_id, "agent_id": "triage", "type": "retrieval", "ts": ts[2],
         "gen_ai.data_source.id": "kb", "documents": [{"id": f"doc-{i}", "score": 1.0 - i / 10} for i in range(docs)]},
        {"event_id": f"{run_id}-dec", "run_id": run_id, "agent_id": "triage", "type": "decision", "ts": ts[3],
         "decision_label": "escalate"},
    ]
    if finished:
        events.append({"event_id": f"{run_id}-end", "run_id": run_id, "agent_id": "triage", "type": "run_finished",
                       "ts": ts[4], "status": "ok"})
    return events


def _emit(lake: Lake, events: list[dict[str, Any]]) -> None:
    with LogWriter(lake.store, background_flush=False, signing_key=lake.settings.signing_key) as writer:
        for event in events:
            writer.append({**event, "ts": event["ts"].isoformat()})


def _ingest(lake: Lake, events: list[dict[str, Any]]) -> None:
    _emit(lake, events)
    ingest_pending_then_facts(lake)


def _spec(run_id: str) -> ContextRequest:
    return ContextRequest.from_spec({"sources": [
        {"name": "history", "table": "raw.events", "columns": ["type", "ts", "decision_label"],
         "where": [["run_id", "=", run_id]], "order_by": ["ts"]},
        {"name": "documents", "table": "facts.retrievals", "columns": ["document_id", "score"],
         "where": [["run_id", "=", run_id]], "order_by": ["score desc"]},
        {"name": "run", "table": "facts.agent_runs", "columns": ["status", "ingest_run_id"],
         "where": [["run_id", "=", run_id]]},
    ]})


def test_round_trip_reproduces_and_at_current_shows_exact_differences(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0) + _run_events("r2", T0))
    result = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    counts = assemble(lake, ContextRequest.from_sql(
        "SELECT run_id, count(*) AS events FROM raw.events WHERE run_id IN ('r1', 'r2') GROUP BY run_id"
    ), run_id="r1-counts", agent_id="triage")

    # What the agent got back, and what the artifact keeps.
    history = result.records["history"]
    assert history.column("type").to_pylist() == ["run_started", "llm_call", "retrieval", "decision", "run_finished"]
    assert result.records["documents"].column("document_id").to_pylist() == ["doc-0", "doc-1"]
    assert result.to_dicts()["run"][0]["status"] == "ok"
    manifest = result.manifest
    assert manifest["record_count"] == 5 + 2 + 1
    assert set(manifest["pins"]) == {"raw.events", "facts.retrievals", "facts.agent_runs"}
    assert all(manifest["pins"][t] == lake.table(t).current_snapshot().snapshot_id for t in manifest["pins"])
    assert "ICEBERG_SCAN" in manifest["plan"]["history"] and "run_id='r1'" in manifest["plan"]["history"]
    assert result.artifact.key.startswith("artifacts/v1/dt=") and not result.artifact.key.startswith("log/")
    assert result.uri == lake.store.uri(result.artifact.key)
    # The log reader never sees artifacts, and the run's audit trail names its artifact.
    assert all(s.key.startswith("log/v1/") for s in lake.log.list_all())
    ingest_pending_then_facts(lake)
    trail = query(lake, "SELECT attributes FROM raw.events WHERE type = 'context_assembled' AND run_id = 'r1'")
    assert orjson.loads(trail.column("attributes")[0].as_py())["artifact_key"] == result.artifact.key

    # More data for the same run, and a rebuild of the day's facts (new lineage for the same rows).
    _ingest(lake, [{"event_id": "r1-late-ret", "run_id": "r1", "agent_id": "triage", "type": "retrieval",
                    "ts": T0 + timedelta(seconds=30), "documents": [{"id": "doc-9", "score": 0.99}]}])
    rebuild_facts(lake, lake.log.list_all()[0].dt, IngestOptions(run_id="rebuild-1"))

    (pinned,) = replay(lake, "r1")
    assert pinned.status == REPRODUCIBLE, pinned.text()
    assert pinned.actual_hash == manifest["records_hash"]

    (current,) = replay(lake, result.artifact.uri, at_current=True)
    assert current.status == DIFFERS
    diffs = {d.part: d for d in current.diffs}
    assert diffs["history"].added_keys == [f"context-{result.artifact.digest}", "r1-late-ret"]
    assert (diffs["history"].removed, diffs["history"].changed) == (0, 0)
    assert diffs["documents"].added_keys == [["r1-late-ret", 0]] and diffs["documents"].changed == 0
    assert diffs["run"].same and diffs["run"].tables == ["facts.agent_runs"]  # a rebuild changes no fact
    assert "r1-late-ret" in current.text()
    assert replay(lake, "r1-counts")[0].status == REPRODUCIBLE
    (recount,) = replay(lake, counts.artifact.key, at_current=True)
    assert [(d.part, d.keys, d.changed_keys, d.added) for d in recount.diffs] == [("result", ["run_id"], ["r1"], 0)]


def test_each_query_reads_the_snapshots_current_when_it_starts_on_a_reused_connection(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    count = "SELECT count(*) AS n FROM raw.events"
    assert query(lake, count).column("n").to_pylist() == [5]
    # Another table only, then the first again after a commit: the view of raw.events is not the old one.
    assert query(lake, "SELECT count(*) AS n FROM facts.decisions").column("n").to_pylist() == [1]
    _ingest(lake, _run_events("r2", T0 + timedelta(minutes=5)))
    assert query(lake, count).column("n").to_pylist() == [10]
    joined = "SELECT count(*) AS n FROM raw.events e JOIN facts.decisions d USING (event_id)"
    assert query(lake, joined).column("n").to_pylist() == [2]
    with pytest.raises(QueryRefused):
        query(lake, "SELECT * FROM raw.nothing")
    assert query(lake, count).column("n").to_pylist() == [10]


def test_as_of_reads_what_was_visible_then_without_late_facts(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    before_feedback = datetime.now(UTC)
    time.sleep(0.01)
    # Feedback about the run, with an event time before T, that arrived after T: a late fact.
    _ingest(lake, [{"event_id": "r1-fb", "run_id": "r1", "agent_id": "triage", "type": "feedback",
                    "ts": T0 + timedelta(seconds=10), "feedback_score": 1.0}])
    sql = "SELECT count(*) AS n FROM facts.feedback WHERE run_id = 'r1' AND ts < TIMESTAMPTZ '2026-11-26 08:00:00+00'"
    assert query(lake, sql).column("n").to_pylist() == [1]
    as_of_ms = int(before_feedback.timestamp() * 1000)
    assert query(lake, sql, as_of_ms=as_of_ms).column("n").to_pylist() == [0]
    assert query(lake, "SELECT count(*) AS n FROM raw.events", as_of_ms=as_of_ms).column("n").to_pylist() == [5]
    # Before anything was ingested the tables read as empty.
    assert query(lake, sql, as_of_ms=as_of_ms - 3_600_000).column("n").to_pylist() == [0]

    request = ContextRequest.from_sql("SELECT event_id, type FROM raw.events WHERE run_id = 'r1' ORDER BY ts")
    then = assemble(lake, request, run_id="audit", agent_id="auditor", as_of=before_feedback)
    assert "r1-fb" not in then.records["result"].column("event_id").to_pylist()
    assert then.manifest["pins"]["raw.events"] == lake.table("raw.events").snapshot_as_of_timestamp(as_of_ms).snapshot_id
    assert replay(lake, "audit")[0].status == REPRODUCIBLE

    from agentlake.cli import main

    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = main(["query", "--json", "--as-of", before_feedback.isoformat(), sql])
    assert code == 0 and orjson.loads(out.getvalue())["rows"] == [{"n": 0}]


def test_artifact_is_write_once_and_tampering_is_detected_by_file(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    result = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    with pytest.raises(AlreadyExists):
        lake.store.put_once(result.artifact.key, b"{}")
    with pytest.raises(AlreadyExists):  # the same manifest again lands on the same, taken, address
        write_artifact(lake.store, orjson.loads(lake.store.get(result.artifact.key)), result.records)

    # Alter the records of one part: same schema, one value changed.
    part = result.manifest["parts"]["documents"]
    table = pq.read_table(io.BytesIO(lake.store.get(part["key"])))
    altered = table.set_column(0, "document_id", pa.array(["doc-X"] + table.column(0).to_pylist()[1:]))
    buffer = io.BytesIO()
    pq.write_table(altered, buffer)
    lake.store.put_overwrite(part["key"], buffer.getvalue())
    (report,) = replay(lake, "r1")
    assert report.status == TAMPERED and not report.ok
    assert any(part["key"] in p for p in report.problems), report.problems
    assert "tables are intact" in report.text()

    from agentlake.cli import main

    assert main(["replay", "r1"]) == 1
    # An altered manifest is named too.
    body = lake.store.get(result.artifact.key).replace(b'"record_count": 8', b'"record_count": 7')
    lake.store.put_overwrite(result.artifact.key, body)
    with pytest.raises(ArtifactTampered, match=result.artifact.key):
        load_artifact(lake.store, result.artifact.key)
    assert replay(lake, result.artifact.key)[0].status == TAMPERED


def test_pins_keep_expired_snapshots_replayable_and_the_metadata_bounded(tmp_path: Path) -> None:
    maintenance = pytest.importorskip("agentlake.maintenance.maintain")
    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    created = datetime.now(UTC)
    result = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage", now=created)
    pinned = result.manifest["pins"]["raw.events"]
    events = lake.table("raw.events")
    pin = pin_in_force(lake, "raw.events", pinned)
    retention = 400 * 24 * 3600 * 1000
    created_ms = int(created.timestamp() * 1000)
    assert pin is not None and not pin.historical and pin.metadata_location == events.metadata_location
    assert created_ms + retention <= pin.expires_ms < created_ms + retention + PIN_GRANULARITY_MS
    assert not any(name.startswith("agentlake.pin.") for name in events.metadata.refs)  # no table commit
    # Re-pinning never shortens; a later artifact extends.
    assemble(lake, _spec("r1"), run_id="r1", agent_id="triage", now=created - timedelta(days=1))
    assert pin_in_force(lake, "raw.events", pinned) == pin
    assemble(lake, _spec("r1"), run_id="r1", agent_id="triage", now=created + timedelta(days=2))
    extended = pin_in_force(lake, "raw.events", pinned)
    assert extended is not None and extended.expires_ms >= created_ms + retention + 2 * 86_400_000
    assert len(pins_of(lake, "raw.events", pinned)) == 3

    _ingest(lake, _run_events("r2", T0))
    unpinned = lake.table("raw.events").current_snapshot().snapshot_id
    _ingest(lake, _run_events("r3", T0))
    _ingest(lake, _run_events("r4", T0))
    # Compaction rewrites the pinned snapshot's files out of main; expiry with no retention then
    # removes every snapshot but the head, the pinned one too: the table's metadata stays bounded.
    assert maintenance.compact(lake, "raw.events").files_rewritten >= 4
    policy = maintenance.RetentionPolicy(keep_hours=0, keep_last=1)
    report = maintenance.expire(lake, "raw.events", now=datetime.now(UTC) + timedelta(minutes=1), policy=policy)
    assert report.files_deferred > 0 and report.files_deleted == 0
    events = lake.table("raw.events")
    assert len(events.metadata.snapshots) == 1 and events.snapshot_by_id(pinned) is None
    # Read through the metadata file the pin names: still the same records.
    assert replay(lake, result.artifact.key)[0].status == REPRODUCIBLE
    with pytest.raises(SnapshotGone, match="no context artifact pinned it"):
        connect(lake, pins={"raw.events": unpinned})

    # Once the pin has run out and its files were deleted, replay says why it cannot.
    report = maintenance.expire(lake, "raw.events", now=created + timedelta(days=403), policy=policy)
    assert report.trash_records_due == 1 and report.files_deleted > 0
    (gone,) = replay(lake, result.artifact.key)
    assert gone.status == UNREPLAYABLE and str(pinned) in gone.text() and "pin ran out" in gone.text()


def test_as_of_older_than_every_live_snapshot_reads_the_metadata_file_current_then(tmp_path: Path) -> None:
    maintenance = pytest.importorskip("agentlake.maintenance.maintain")
    lake = _lake(tmp_path)
    for name in ("raw.events", "facts.feedback"):
        # Keep one previous metadata file in the metadata log: older times need the folder's listing.
        with lake.table(name).transaction() as tx:
            tx.set_properties({"write.metadata.previous-versions-max": "1"})
    _ingest(lake, _run_events("r1", T0))
    before_feedback = datetime.now(UTC)
    time.sleep(0.01)
    # Feedback about the run, with an event time before T, that arrived after T: a late fact.
    _ingest(lake, [{"event_id": "r1-fb", "run_id": "r1", "agent_id": "triage", "type": "feedback",
                    "ts": T0 + timedelta(seconds=10), "feedback_score": 1.0}])
    for run in ("r2", "r3", "r4"):
        _ingest(lake, _run_events(run, T0))
    policy = maintenance.RetentionPolicy(keep_hours=0, keep_last=1)
    for name in ("raw.events", "facts.feedback"):
        maintenance.expire(lake, name, now=datetime.now(UTC) + timedelta(minutes=1), policy=policy)
    events = lake.table("raw.events")
    assert len(events.metadata.snapshots) == 1 and len(events.metadata.metadata_log) == 1
    assert events.metadata.snapshots[0].timestamp_ms > before_feedback.timestamp() * 1000

    as_of_ms = int(before_feedback.timestamp() * 1000)
    # A commit that lost its race left a file with the same version as the one current then, which
    # never was current: the answer comes from the files that were (the next version's log).
    winner = snapshot_at(lake, events, as_of_ms)
    assert winner.snapshot_id is not None and winner.metadata_location is not None
    version = winner.metadata_location.rsplit("/", 1)[-1].split("-", 1)[0]
    loser = orjson.loads(events.io.new_input(winner.metadata_location).open().read())
    loser["current-snapshot-id"] = 12345
    loser_location = winner.metadata_location.rsplit("/", 1)[0] + f"/{version}-{uuid.UUID(int=0)}.metadata.json"
    with events.io.new_output(loser_location).create() as out:
        out.write(orjson.dumps(loser))
    assert snapshot_at(lake, events, as_of_ms) == winner
    feedback = "SELECT count(*) AS n FROM facts.feedback WHERE run_id = 'r1'"
    assert query(lake, feedback).column("n").to_pylist() == [1]
    assert query(lake, feedback, as_of_ms=as_of_ms).column("n").to_pylist() == [0]
    assert query(lake, "SELECT count(*) AS n FROM raw.events", as_of_ms=as_of_ms).column("n").to_pylist() == [5]
    assert query(lake, "SELECT count(*) AS n FROM raw.events", as_of_ms=as_of_ms - 3_600_000).column(
        "n").to_pylist() == [0]

    # A context as of then pins a snapshot gone from the table: a historical pin, replayable.
    request = ContextRequest.from_sql("SELECT event_id FROM raw.events ORDER BY event_id")
    then = assemble(lake, request, run_id="audit", agent_id="auditor", as_of=before_feedback)
    assert then.records["result"].num_rows == 5 and "r1-fb" not in then.records["result"].column(0).to_pylist()
    pinned = then.manifest["pins"]["raw.events"]
    assert events.snapshot_by_id(pinned) is None
    pin = pin_in_force(lake, "raw.events", pinned)
    assert pin is not None and pin.historical and pin.metadata_location != events.metadata_location
    assert replay(lake, "audit")[0].status == REPRODUCIBLE


def test_requests_are_validated_and_hashes_ignore_row_order() -> None:
    with pytest.raises(InvalidRequest, match="no column"):
        ContextRequest.from_spec({"table": "raw.events", "where": [["run_id; DROP", "=", "x"]]})
    with pytest.raises(InvalidRequest, match="unknown table"):
        ContextRequest.from_spec({"table": "raw.nope"})
    with pytest.raises(InvalidRequest, match="operator"):
        ContextRequest.from_spec({"table": "raw.events", "where": [["run_id", "like", "x"]]})
    spec = ContextRequest.from_spec({"table": "raw.events", "where": [["run_id", "=", "o'brien"]], "limit": 3})
    (sql,) = spec.queries().values()
    assert "\"run_id\" = 'o''brien'" in sql and sql.endswith('ORDER BY "event_id" LIMIT 3')
    assert ContextRequest.from_spec(spec.to_json()) == spec
    joined = ContextRequest.from_sql('SELECT * FROM "RAW".events e JOIN facts.retrievals r ON e.run_id = r.run_id')
    assert joined.tables() == ["facts.retrievals", "raw.events"]  # what gets pinned
    with pytest.raises(InvalidRequest, match="none of the tables"):
        ContextRequest.from_sql("SELECT 42").tables()
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", None]})
    assert records_hash(table) == records_hash(table.take([2, 0, 1]))
    assert records_hash(table) != records_hash(table.slice(0, 2))


def test_context_over_s3(tmp_path: Path, s3_settings: S3Settings) -> None:
    settings = Settings(home=tmp_path / "home", store="s3", s3=s3_settings)
    lake = Lake(settings)
    _ingest(lake, _run_events("r1", T0))
    result = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    assert result.uri.startswith(f"s3://{s3_settings.bucket}/agentlake/artifacts/v1/")
    assert result.manifest["record_count"] == 8
    assert replay(lake, "r1")[0].status == REPRODUCIBLE


def test_pins_and_as_of_through_metadata_files_over_s3(tmp_path: Path, s3_settings: S3Settings) -> None:
    maintenance = pytest.importorskip("agentlake.maintenance.maintain")
    lake = Lake(Settings(home=tmp_path / "home", store="s3", s3=s3_settings))
    with lake.table("raw.events").transaction() as tx:
        tx.set_properties({"write.metadata.previous-versions-max": "1"})
    _ingest(lake, _run_events("r1", T0))
    result = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    then = datetime.now(UTC)
    time.sleep(0.01)
    _ingest(lake, _run_events("r2", T0))
    _ingest(lake, _run_events("r3", T0))
    policy = maintenance.RetentionPolicy(keep_hours=0, keep_last=1)
    report = maintenance.expire(lake, "raw.events", now=datetime.now(UTC) + timedelta(minutes=1), policy=policy)
    assert report.snapshots_expired >= 2 and report.files_deferred > 0
    assert lake.store.list(maintenance.trash_prefix("raw.events"))
    assert lake.table("raw.events").snapshot_by_id(result.manifest["pins"]["raw.events"]) is None
    assert replay(lake, "r1")[0].status == REPRODUCIBLE
    # Older than the metadata log: the table's metadata folder is listed in the bucket.
    sql = "SELECT count(DISTINCT run_id) AS n FROM raw.events WHERE run_id LIKE 'r_'"
    assert query(lake, sql, as_of_ms=int(then.timestamp() * 1000)).column("n").to_pylist() == [1]
    assert query(lake, sql).column("n").to_pylist() == [3]


def test_context_artifacts_asset_indexes_the_day_with_checks(tmp_path: Path) -> None:
    from dagster import DagsterInstance, materialize

    from assets.context import context_artifacts
    from platform_defs.resources import LakeResource

    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0) + _run_events("r2", T0))
    made = [assemble(lake, _spec(r), run_id=r, agent_id="triage") for r in ("r1", "r2")]
    day = made[0].manifest["created_at"][:10]
    resource = LakeResource(home=str(lake.settings.home))
    with DagsterInstance.ephemeral() as instance:
        result = materialize([context_artifacts], partition_key=day, resources={"lake": resource}, instance=instance)
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"artifacts_readable": True, "artifacts_hash_verified": True, "artifact_pins_resolvable": True}
        rows = lake.table("context.artifacts").scan().to_arrow()
        assert sorted(rows.column("artifact_key").to_pylist()) == sorted(m.artifact.key for m in made)
        assert rows.column("record_count").to_pylist() == [8, 8]
        (mat,) = result.asset_materializations_for_node("context_artifacts")
        meta = {k: v.value for k, v in mat.metadata.items()}
        assert meta["dagster/table_name"] == "context.artifacts"
        assert meta["dagster/row_count"] == meta["dagster/partition_row_count"] == 2
        assert [c.name for c in meta["dagster/column_schema"].columns] == rows.column_names
        # Idempotent; and an altered artifact fails the hash check, naming it.
        part = made[1].manifest["parts"]["history"]["key"]
        lake.store.put_overwrite(part, lake.store.get(part) + b"x")
        result = materialize([context_artifacts], partition_key=day, resources={"lake": resource}, instance=instance)
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert not checks["artifacts_hash_verified"].passed and checks["artifacts_readable"].passed
        assert checks["artifacts_hash_verified"].metadata["first_failing"].value == made[1].artifact.key
        assert lake.table("context.artifacts").scan().to_arrow().num_rows == 2


def test_cli_context_build_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentlake.cli import main

    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    spec = tmp_path / "spec.json"
    spec.write_bytes(orjson.dumps({"table": "raw.events", "where": [["run_id", "=", "r1"]]}))
    assert main(["context", "build", "--run-id", "cli-run", "--spec", str(spec)]) == 0
    uri = capsys.readouterr().out.strip()
    assert uri.startswith("file://") and "/artifacts/v1/dt=" in uri
    assert main(["replay", "--json", uri]) == 0
    (report,) = orjson.loads(capsys.readouterr().out)["replays"]
    assert report["status"] == REPRODUCIBLE and report["record_count"] == 5
    assert main(["replay", f"no-such-run-{uuid.uuid4().hex}"]) == 2
    assert "no context artifact" in capsys.readouterr().err
    # A table dropped (and created again, empty): the replay says why it cannot, naming the snapshot.
    lake.catalog.drop_table("raw.events")
    assert main(["replay", "cli-run"]) == 1
    out = capsys.readouterr().out
    assert "UNREPLAYABLE" in out and str(report["pins"]["raw.events"]) in out


def test_clustering_by_run_keeps_rows_and_pinned_artifacts(tmp_path: Path) -> None:
    from agentlake.maintenance.clustering import cluster_day

    lake = _lake(tmp_path)
    for n in range(4):  # four commits, each file spanning every run id of its commit
        _ingest(lake, [e for r in range(5) for e in _run_events(f"r{r}-{n}", T0)])
    result = assemble(lake, _spec("r3-2"), run_id="r3-2", agent_id="triage")
    before = query(lake, "SELECT * FROM raw.events ORDER BY event_id")
    day = lake.log.list_all()[0].dt
    report = cluster_day(lake, "raw.events", day)
    assert (report.files_read, report.files_written, report.rows) == (4, 1, before.num_rows)
    assert query(lake, "SELECT * FROM raw.events ORDER BY event_id").equals(before)
    run_ids = query(lake, "SELECT run_id FROM raw.events").column("run_id").to_pylist()
    assert run_ids == sorted(run_ids)  # one file, in run order: row groups and files prune by run
    assert replay(lake, "r3-2")[0].status == REPRODUCIBLE  # the pinned, pre-clustering snapshot
    (current,) = replay(lake, result.artifact.key, at_current=True)
    assert {d.part: d.same for d in current.diffs}["history"]  # same rows, other files


def test_context_layout_asset_clusters_a_day(tmp_path: Path) -> None:
    from dagster import DagsterInstance, materialize

    from assets.context import context_layout
    from platform_defs.resources import LakeResource

    lake = _lake(tmp_path)
    for n in range(2):
        _ingest(lake, [e for r in range(3) for e in _run_events(f"r{r}-{n}", T0)])
    day = lake.log.list_all()[0].dt
    with DagsterInstance.ephemeral() as instance:
        result = materialize([context_layout], partition_key=day, instance=instance,
                             resources={"lake": LakeResource(home=str(lake.settings.home))})
    assert result.success
    meta = result.asset_materializations_for_node("context_layout")[0].metadata
    assert meta["raw.events"].value["files_read"] == 2 and meta["raw.events"].value["files_written"] == 1
    assert lake.table("raw.events").current_snapshot().summary["agentlake.clustered-by"] == "run_id"


def test_context_reads_only_published_data(tmp_path: Path) -> None:
    from agentlake.gate.publish import branch_name, stage
    from agentlake.tables.files import write_files
    from agentlake.tables.schemas import EVENTS

    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0))
    # A batch written and not published (staged on its branch, as the quality gate does).
    events = lake.table("raw.events")
    row = events.scan(row_filter="event_id == 'r1-dec'").to_arrow()
    staged_row = row.set_column(row.schema.get_field_index("event_id"), "event_id", pa.array(["staged-1"]))
    staged = stage(events, write_files(events, EVENTS, [staged_row]), branch_name("test", "2026-11-26"), {})
    assert "staged-1" in lake.table("raw.events").scan().use_ref(staged.branch).to_arrow().column("event_id").to_pylist()
    request = ContextRequest.from_sql("SELECT event_id FROM raw.events WHERE run_id = 'r1'")
    result = assemble(lake, request, run_id="r1", agent_id="triage")
    assert result.records["result"].num_rows == 5
    assert "staged-1" not in result.records["result"].column("event_id").to_pylist()
    assert result.manifest["pins"]["raw.events"] == staged.base_snapshot_id  # main's head, not the branch's


def test_replay_trusts_no_pointer_and_no_data_file_it_cannot_verify(tmp_path: Path) -> None:
    from agentlake.context.assembly import run_prefix
    from agentlake.tables.files import live_files

    lake = _lake(tmp_path)
    _ingest(lake, _run_events("r1", T0) + _run_events("r2", T0))
    first = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    second = assemble(lake, _spec("r2"), run_id="r2", agent_id="triage")
    ingest_pending_then_facts(lake)  # the context_assembled events reach raw.events
    (honest,) = replay(lake, "r1")
    assert honest.status == REPRODUCIBLE and honest.log_verified is True

    # r1's pointer redirected to r2's manifest: REPRODUCIBLE for the wrong run, unless checked.
    (pointer,) = lake.store.list(run_prefix("r1"))
    lake.store.put_overwrite(pointer.key, second.artifact.key.encode())
    (redirected,) = replay(lake, "r1")
    assert redirected.status == TAMPERED and "leads to the manifest of run 'r2'" in redirected.text()
    lake.store.put_overwrite(pointer.key, first.artifact.key.encode())

    # A data file of a pinned snapshot replaced (same rows, other values), then deleted.
    events = lake.table("raw.events")
    (victim,) = [f for f in live_files(events, events.snapshot_by_id(first.manifest["pins"]["raw.events"]))
                 if f.record_count][:1]
    path = Path(victim.file_path.removeprefix("file://"))
    original = pq.read_table(path)
    forged = original.set_column(original.schema.get_field_index("decision_label"), "decision_label",
                                 pa.array(["approve"] * original.num_rows, original.schema.field("decision_label").type))
    pq.write_table(forged, path)
    (replaced,) = replay(lake, first.artifact.key)
    assert replaced.status == TAMPERED, replaced.text()
    assert any(str(path) in p or "changed in place" in p for p in replaced.problems), replaced.problems
    path.unlink()
    (deleted,) = replay(lake, first.artifact.key)
    assert deleted.status == TAMPERED and any(str(path) in p and "missing" in p for p in deleted.problems), deleted.text()


def test_with_a_signing_key_a_record_agentlake_did_not_sign_is_acted_on_by_nobody(tmp_path: Path) -> None:
    from agentlake.context.assembly import write_artifact
    from agentlake.context.pins import Pin, pins_of
    from agentlake.maintenance.maintain import empty_trash, trash_prefix
    from agentlake.tables.files import live_files

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_SIGNING_KEY": "k3y-of-the-lake"}))
    _ingest(lake, _run_events("r1", T0))
    made = assemble(lake, _spec("r1"), run_id="r1", agent_id="triage")
    manifest = orjson.loads(lake.store.get(made.artifact.key))
    assert len(manifest["signature"]) == 64
    (honest,) = replay(lake, made.artifact.key)
    assert honest.status == REPRODUCIBLE

    # Someone with write access to the store, but not the key, writes a well-formed artifact.
    forged = {k: v for k, v in manifest.items() if k != "signature"} | {"run_id": "forged",
                                                                       "created_at": datetime.now(UTC).isoformat()}
    forged["parts"] = {name: dict(part) for name, part in manifest["parts"].items()}
    key = write_artifact(lake.store, forged, made.records).key
    (report,) = replay(lake, key)
    assert report.status == TAMPERED and any("carries no signature" in p for p in report.problems)

    # A forged pin is ignored; a forged trash record deletes nothing, not even unreferenced files.
    events = lake.table("raw.events")
    sid = events.current_snapshot().snapshot_id
    genuine = pins_of(lake, "raw.events", sid)
    bogus = Pin("raw.events", sid, "file:///tmp/forged.metadata.json", 0, 9_999_999_999_999, False)
    lake.store.put_once(f"pins/raw.events/{sid}/9999999999999.json", bogus.to_json())
    assert pins_of(lake, "raw.events", sid) == genuine
    # A genuine, signed pin record altered in place (another metadata file, the signature kept): ignored too.
    (record,) = [info.key for info in lake.store.list(f"pins/raw.events/{sid}/") if "9999999999999" not in info.key]
    altered = orjson.loads(lake.store.get(record)) | {"metadata_location": "file:///tmp/forged.metadata.json"}
    lake.store.put_overwrite(record, orjson.dumps(altered))
    assert pins_of(lake, "raw.events", sid) == []
    garbage = f"{events.location().rstrip('/')}/data/unreferenced.parquet"
    Path(garbage.removeprefix("file://")).write_bytes(b"x")
    lake.store.put_once(f"{trash_prefix('raw.events')}{0:015d}-forged.json",
                        orjson.dumps({"table": "raw.events", "noticed_ms": 0, "files": {garbage: 1}}))
    emptied = empty_trash(lake, "raw.events")
    assert Path(garbage.removeprefix("file://")).exists() and emptied.files_deleted == 0
    assert any("carries no signature" in r for r in emptied.refused)
    assert live_files(events)  # and the table is untouched


# --- federated context: ext tables and live sources -------------------------------------------------------


def _support_run(run_id: str, customer: str, start: datetime) -> list[dict[str, Any]]:
    return [{**e, "agent_id": "support", "tenant": customer} for e in _run_events(run_id, start)]


def test_a_federated_artifact_over_ext_tables_replays_reproducible_after_the_source_changed_and_names_the_changed_fields(
        tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    assert query(lake, "SELECT count(*) AS n FROM ext.tickets").column("n").to_pylist() == [0], \
        "an ext table never loaded reads as empty"
    db = helpdesk.create(lake.settings.sources_home / "helpdesk.db", seed=5).path
    publish_helpdesk(lake, db, "load-1")
    ticket = query(lake, "SELECT ticket_id, customer_id FROM ext.tickets WHERE status = 'open' "
                         "ORDER BY ticket_id LIMIT 1").to_pylist()[0]
    customer = ticket["customer_id"]
    _ingest(lake, _support_run("s-earlier", customer, T0) + _support_run("s-other", "c-nobody", T0))
    request = ContextRequest.from_spec({"sources": [
        {"name": "ticket", "table": "ext.tickets", "where": [["ticket_id", "=", ticket["ticket_id"]]]},
        {"name": "customer", "table": "ext.customers", "where": [["customer_id", "=", customer]]},
        {"name": "earlier_runs", "table": "facts.agent_runs", "columns": ["status", "started_at"],
         "where": [["tenant", "=", customer]]},
        {"name": "decisions", "table": "facts.decisions", "columns": ["decision_label"],
         "where": [["tenant", "=", customer]]},
    ]})
    result = assemble(lake, request, run_id="s-now", agent_id="support")
    assert {k: v.num_rows for k, v in result.records.items()} == {
        "ticket": 1, "customer": 1, "earlier_runs": 1, "decisions": 1}
    pins = result.manifest["pins"]
    assert set(pins) == {"ext.tickets", "ext.customers", "facts.agent_runs", "facts.decisions"}
    assert pins["ext.tickets"] == lake.table("ext.tickets").current_snapshot().snapshot_id  # type: ignore[union-attr]
    joined = assemble(lake, ContextRequest.from_sql(
        "SELECT t.ticket_id, t.status, c.plan, count(r.run_id) AS earlier_runs FROM ext.tickets t "
        "JOIN ext.customers c USING (customer_id) LEFT JOIN facts.agent_runs r ON r.tenant = c.customer_id "
        f"WHERE t.ticket_id = '{ticket['ticket_id']}' GROUP BY ALL"), run_id="s-now-sql", agent_id="support")
    assert joined.records["result"].column("earlier_runs").to_pylist() == [1]

    # The source moves on: the demo advances, the ticket is solved and escalated, and a new load publishes it.
    helpdesk.advance(db, 5)
    set_ticket(db, ticket["ticket_id"], status="solved", priority="urgent")
    publish_helpdesk(lake, db, "load-2")
    assert lake.table("ext.tickets").current_snapshot().snapshot_id != pins["ext.tickets"]  # type: ignore[union-attr]

    (pinned,) = replay(lake, result.artifact.key)
    assert pinned.status == REPRODUCIBLE, pinned.text()
    assert replay(lake, joined.artifact.key)[0].status == REPRODUCIBLE
    (current,) = replay(lake, result.artifact.key, at_current=True)
    assert current.status == DIFFERS
    diffs = {d.part: d for d in current.diffs}
    assert diffs["ticket"].changed_keys == [ticket["ticket_id"]]
    (change,) = diffs["ticket"].changed_fields
    assert change["key"] == ticket["ticket_id"]
    assert set(change["fields"]) == {"status", "priority", "updated_at"}
    assert change["fields"]["status"] == ["open", "solved"]
    assert diffs["earlier_runs"].same and diffs["decisions"].same
    assert f"{ticket['ticket_id']}: " in current.text() and "status open -> solved" in current.text()


def test_a_live_part_reports_source_changed_with_its_differences_and_no_unconfigured_source_is_read(
        tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    db = helpdesk.create(lake.settings.sources_home / "helpdesk.db", seed=5).path
    publish_helpdesk(lake, db, "load-1")
    request = ContextRequest.from_spec({"sources": [
        {"name": "ticket", "table": "ext.tickets", "where": [["ticket_id", "=", "t000001"]]},
        {"name": "status_now", "live": "helpdesk", "table": "tickets", "columns": ["status", "priority"],
         "where": [["ticket_id", "in", ["t000001", "t000002"]], ["is_deleted", "=", 0]]},
    ]})
    result = assemble(lake, request, run_id="live-1", agent_id="support")
    assert result.records["status_now"].column("ticket_id").to_pylist() == ["t000001", "t000002"]
    assert set(result.manifest["pins"]) == {"ext.tickets"}, "a live part has no snapshot to pin"
    live = result.manifest["parts"]["status_now"]["live"]
    assert live["params"] == ["t000001", "t000002", 0] and "?" in live["sql"] and "t000001" not in live["sql"]
    assert len(live["fingerprint"]) == 64
    (same,) = replay(lake, result.artifact.key)
    assert same.status == REPRODUCIBLE and [p.status for p in same.live] == [REPRODUCIBLE], same.text()

    set_ticket(db, "t000002", status="pending")
    (changed,) = replay(lake, result.artifact.key)
    assert changed.status == REPRODUCIBLE, "the pinned part is unchanged: " + changed.text()
    (part,) = changed.live
    assert part.status == SOURCE_CHANGED and part.diff is not None
    assert part.diff.changed_keys == ["t000002"]
    assert part.diff.changed_fields == [{"key": "t000002", "fields": {"status": ["open", "pending"]}}]
    assert "SOURCE CHANGED" in changed.text() and "status open -> pending" in changed.text()

    # Hostile: a live part may name only a configured source and its declared tables, never a file.
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    for live_source, table in ((str(other), "tickets"), (f"sqlite:///{other}", "tickets"),
                               ("helpdesk", "sqlite_master"), ("helpdesk", "../other.db")):
        with pytest.raises(InvalidRequest, match="is not configured"):
            ContextRequest.from_spec({"sources": [{"live": live_source, "table": table}]})
    with pytest.raises(InvalidRequest, match="has no column"):
        ContextRequest.from_spec({"sources": [{"live": "helpdesk", "table": "tickets", "columns": ["1; DROP"]}]})
    for sql in (f"SELECT * FROM sqlite_scan('{db}', 'tickets')", f"SELECT * FROM sqlite_query('{db}', 'SELECT 1')",
                f"SELECT * FROM '{db}'"):
        with pytest.raises(QueryRefused):
            query(lake, sql)
