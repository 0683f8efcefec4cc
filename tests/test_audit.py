"""The audit walk: from a demo decision to its artifact, pinned snapshots and verified log segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentlake.cli import main
from agentlake.config import S3Settings, Settings
from agentlake.context.audit import audit, render_html
from agentlake.context.replay import REPRODUCIBLE, TAMPERED
from agentlake.tables.lake import Lake

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def audited(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[Lake, str, str]:
    """A lake (embedded default, or over the S3 server) holding demo runs, one of them with an artifact.

    Returns the lake, the audited run id and its artifact's key, all made through the CLI.
    """
    if request.param == "s3":
        s3: S3Settings = request.getfixturevalue("s3_settings")
        for name, value in {"AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": s3.bucket,
                            "AGENTLAKE_S3_PREFIX": s3.prefix, "AGENTLAKE_S3_ENDPOINT": str(s3.endpoint),
                            "AWS_ACCESS_KEY_ID": "agentlake-test",
                            "AWS_SECRET_ACCESS_KEY": "agentlake-test-secret"}.items():
            monkeypatch.setenv(name, value)
    assert main(["demo", "--runs", "6", "--seed", "14"]) == 0
    assert main(["ingest"]) == 0
    capsys.readouterr()
    lake = Lake(Settings.from_env())
    decisions = lake.table("raw.events").scan(selected_fields=("run_id", "type")).to_arrow().to_pylist()
    run_id = sorted({d["run_id"] for d in decisions if d["type"] == "decision"})[0]
    spec = tmp_path / "spec.json"
    spec.write_bytes(orjson.dumps({"sources": [
        {"name": "history", "table": "raw.events", "columns": ["event_id", "type", "ts"],
         "where": [["run_id", "=", run_id]], "order_by": ["ts"]},
        {"name": "documents", "table": "facts.retrievals", "columns": ["document_id", "score"],
         "where": [["run_id", "=", run_id]], "order_by": ["score desc"]},
    ]}))
    assert main(["context", "build", "--run-id", run_id, "--agent-id", "support-triage", "--spec", str(spec),
                 "--json"]) == 0
    key = orjson.loads(capsys.readouterr().out)["key"]
    assert main(["ingest"]) == 0  # the context_assembled event reaches raw.events: replay holds the manifest to it
    capsys.readouterr()
    return Lake(Settings.from_env()), run_id, key


def _logged(capsys: pytest.CaptureFixture[str]) -> set[str]:
    assert main(["log", "ls", "--json"]) == 0
    return {s["key"] for s in orjson.loads(capsys.readouterr().out)["segments"]}


def test_audit_walks_from_a_demo_decision_to_verified_segments_and_reports_tampering(
    audited: tuple[Lake, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, run_id, key = audited
    assert main(["audit", run_id, "--json"]) == 0
    trail: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert {"decision", "artifact", "replay", "pins", "segments"} <= set(trail)
    assert trail["decision"]["type"] == "decision" and trail["decision"]["event_id"] in {
        e["event_id"] for e in trail["events"]}
    assert trail["artifact"]["key"] == key and trail["artifact"]["record_count"] > 0
    assert trail["artifact"]["request"]["sources"][0]["table"] == "raw.events" and trail["artifact"]["plan"]
    assert trail["replay"]["status"] == REPRODUCIBLE and trail["replay"]["log_verified"] is True
    pins = {p["table"]: p for p in trail["pins"]}
    assert set(pins) == {"raw.events", "facts.retrievals"}
    for pin in pins.values():
        assert {"table", "snapshot_id", "committed_at", "dagster_run_id", "checks"} <= set(pin)
        assert pin["snapshot_id"] == trail["artifact"]["pins"][pin["table"]] and pin["committed_at"]
        assert pin["dagster_run_id"] is None  # committed by the CLI, not by a Dagster run
    # raw.events went through the gate: its kept validation; facts say they have none.
    (validation,) = [c for c in pins["raw.events"]["checks"] if c["kind"] == "validation"]
    assert validation["success"] and validation["key"].startswith("audit/v1/validations/raw.events/")
    assert pins["facts.retrievals"]["checks"] == [] and "no validation" in pins["facts.retrievals"]["checks_note"]
    # Every segment named is in the log, verifies, and holds the run's events at the lines named.
    segments = trail["segments"]
    assert segments and all(s["checksum_ok"] and s["lines_ok"] for s in segments)
    assert {s["key"] for s in segments} <= _logged(capsys)
    history = {e["segment_key"] for e in trail["events"] if e["type"] != "context_assembled"}
    assert history <= {s["key"] for s in segments}
    assert sum(len(s["lines"]) for s in segments) >= trail["artifact"]["parts"]["history"]["rows"]
    page = render_html(audit(lake, run_id))
    assert key in page and segments[0]["key"] in page and "verified" in page

    # A segment altered in the store: reported as tampered, naming it; the exit status says so.
    victim = segments[0]["key"]
    lake.store.put_overwrite(victim, lake.store.get(victim)[:-8] + b"tampered")
    assert main(["audit", run_id]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and victim in out
    (seg,) = [s for s in audit(lake, run_id).segments if s.key == victim]
    assert not seg.checksum_ok and victim in seg.problem

    # A records file of the artifact altered: the replay verdict is tampered, naming the file.
    part = trail["artifact"]["parts"]["history"]["key"]
    lake.store.put_overwrite(part, lake.store.get(part) + b"x")
    assert main(["audit", run_id, "--json"]) == 1
    again = orjson.loads(capsys.readouterr().out)
    assert again["replay"]["status"] == TAMPERED and any(part in p for p in again["replay"]["problems"])
    assert again["tampered"] is True

    # The manifest itself altered: nothing in it can be trusted, and the audit says so, naming it.
    lake.store.put_overwrite(key, lake.store.get(key) + b" ")
    assert main(["audit", run_id, "--json"]) == 1
    forged = orjson.loads(capsys.readouterr().out)
    assert forged["tampered"] is True and forged["replay"]["status"] == TAMPERED
    assert any(key in p for p in forged["problems"])


def test_the_decision_s_context_artifact_attribute_chooses_the_artifact_and_an_unknown_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentlake.log.writer import LogWriter

    lake = Lake(Settings.from_env())
    events = [{"event_id": f"d-{i}", "run_id": "r-attr", "agent_id": "a", "type": t, "ts": f"2026-11-26T07:00:0{i}Z"}
              for i, t in enumerate(("run_started", "retrieval", "run_finished"))]
    with LogWriter(lake.store, background_flush=False) as writer:
        for event in events:
            writer.append(event)
    assert main(["ingest"]) == 0
    capsys.readouterr()
    keys = []
    for sql in ("SELECT event_id FROM raw.events WHERE run_id = 'r-attr'", "SELECT count(*) AS n FROM raw.events"):
        assert main(["context", "build", "--run-id", "r-attr", "--sql", sql, "--json"]) == 0
        keys.append(orjson.loads(capsys.readouterr().out)["key"])
    with LogWriter(lake.store, background_flush=False) as writer:  # the decision names the first artifact
        writer.append({"event_id": "d-dec", "run_id": "r-attr", "agent_id": "a", "type": "decision",
                       "ts": "2026-11-26T07:00:09Z", "attributes": {"context_artifact": lake.store.uri(keys[0])}})
    assert main(["ingest"]) == 0
    capsys.readouterr()
    trail = audit(lake, "r-attr")
    assert trail.artifact is not None and trail.artifact["key"] == keys[0]
    assert "context_artifact" in trail.artifact["found_by"] and sorted(trail.artifacts) == sorted(keys)
    assert {s.key for s in trail.segments} and all(s.checksum_ok for s in trail.segments)

    assert main(["audit", "no-such-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("agentlake: ") and "no-such-run" in err[0]


def test_dagster_runs_stamp_their_snapshots_and_the_index_links_each_decision_to_them_and_its_audit_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster import AssetKey, DagsterInstance, DagsterRunMetadataValue, UrlMetadataValue, materialize

    from assets.context import context_artifacts
    from assets.ingest import build_facts, ingest_log
    from platform_defs.resources import LakeResource

    assert main(["demo", "--runs", "4", "--seed", "3"]) == 0
    capsys.readouterr()
    lake = Lake(Settings.from_env())
    resource = LakeResource(home=str(lake.settings.home))
    (day,) = lake.log.days()
    with DagsterInstance.ephemeral() as instance:
        ingested = materialize([ingest_log, build_facts], partition_key=day, resources={"lake": resource},
                               instance=instance)
        assert ingested.success
        run_id = next(r["run_id"] for r in lake.table("raw.events").scan(selected_fields=("run_id", "type"))
                      .to_arrow().to_pylist() if r["type"] == "decision")
        assert main(["context", "build", "--run-id", run_id, "--json", "--sql",
                     f"SELECT event_id, type FROM raw.events WHERE run_id = '{run_id}'"]) == 0
        key = orjson.loads(capsys.readouterr().out)["key"]
        indexed = materialize([context_artifacts], partition_key=key.split("dt=")[1][:10],
                              resources={"lake": resource}, instance=instance)
        assert indexed.success
    # The commit itself records the Dagster run: the audit reads it from Iceberg.
    (pin,) = audit(lake, run_id).pins
    assert pin.table == "raw.events" and pin.dagster_run_id == ingested.run_id
    (mat,) = indexed.asset_materializations_for_node("context_artifacts")
    meta = {k: v.value for k, v in mat.metadata.items()}
    (row,) = [r.data for r in meta["decisions"].records if r.data["run_id"] == run_id]
    assert row["artifact_key"] == key and row["decision"] and f"raw.events: {ingested.run_id}" in row["committed_by"]
    assert meta[f"audit {run_id}"].endswith(f"/audit/{run_id}")
    # Links: Dagster's run and asset metadata values, and a URL to the audit page.
    assert isinstance(mat.metadata[f"committed raw.events@{pin.snapshot_id}"], DagsterRunMetadataValue)
    assert meta[f"committed raw.events@{pin.snapshot_id}"] == ingested.run_id
    assert isinstance(mat.metadata[f"audit {run_id}"], UrlMetadataValue)
    assert meta["pinned raw.events"] in (AssetKey(["raw", "events"]), AssetKey(["raw", "events"]).to_user_string())
    # In the lineage graph the index sits downstream of every table an artifact pins.
    deps = {d.asset_key for d in context_artifacts.specs_by_key[AssetKey("context_artifacts")].deps}
    assert {AssetKey(["raw", "events"]), AssetKey(["facts", "retrievals"]), AssetKey(["facts", "decisions"])} <= deps


def test_the_audit_page_is_read_only_escaped_and_checks_the_run_id(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request

    from agentlake.log.writer import LogWriter
    from platform_defs.audit_page import make_server

    lake = Lake(Settings.from_env())
    hostile = "<script>alert(1)</script>"
    with LogWriter(lake.store, background_flush=False) as writer:
        writer.append({"event_id": "e<b>1", "run_id": hostile, "agent_id": "a", "type": "decision",
                       "ts": "2026-11-26T07:00:00Z", "decision_label": "<img src=x onerror=alert(2)>"})
    assert main(["ingest"]) == 0
    capsys.readouterr()
    server = make_server(lake.settings, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/audit/"

    def get(path: str, method: str = "GET") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=60) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        status, page = get(urllib.parse.quote(hostile, safe=""))
        assert status == 200 and "&lt;script&gt;" in page and "<script>" not in page
        assert "&lt;img src=x" in page and "<img" not in page and "<b>" not in page
        assert get("..")[0] == 400 and get("no-such-run")[0] == 404
        assert get(urllib.parse.quote(hostile, safe=""), "POST")[0] == 501  # GET only
        assert get(urllib.parse.quote(hostile, safe=""), "DELETE")[0] == 501
    finally:
        server.shutdown()
        server.server_close()


def test_a_federated_decision_s_audit_names_the_source_loads_of_its_ext_pins_and_the_verdict_of_its_live_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentlake.sources import helpdesk
    from agentlake.sources.agents import READING_KINDS
    from tests.helpdesk_rows import publish_helpdesk, set_ticket

    monkeypatch.setenv("AGENTLAKE_HOME", str(tmp_path / "home"))
    assert main(["demo", "--runs", "4", "--seed", "3"]) == 0
    assert main(["ingest"]) == 0
    capsys.readouterr()
    lake = Lake(Settings.from_env())
    db = helpdesk.create(lake.settings.sources_home / "helpdesk.db", seed=2).path
    publish_helpdesk(lake, db, "load-a")
    # A run of a kind that reads no context of its own: the artifact built here is the run's only one.
    run_id = sorted({r["run_id"] for r in lake.table("raw.events").scan(selected_fields=("run_id", "agent_id"))
                     .to_arrow().to_pylist() if r["agent_id"] not in READING_KINDS})[0]
    spec = tmp_path / "spec.json"
    spec.write_bytes(orjson.dumps({"sources": [
        {"name": "history", "table": "raw.events", "columns": ["event_id", "type"], "where": [["run_id", "=", run_id]]},
        {"name": "ticket", "table": "ext.tickets", "where": [["ticket_id", "=", "t000003"]]},
        {"name": "comments", "table": "ext.ticket_comments", "where": [["ticket_id", "=", "t000003"]]},
        {"name": "ticket_now", "live": "helpdesk", "table": "tickets", "columns": ["status"],
         "where": [["ticket_id", "=", "t000003"]]},
    ]}))
    assert main(["context", "build", "--run-id", run_id, "--agent-id", "support-triage", "--spec", str(spec)]) == 0
    assert main(["ingest"]) == 0
    capsys.readouterr()
    assert main(["audit", run_id, "--json"]) == 0
    trail = orjson.loads(capsys.readouterr().out)
    pins = {p["table"]: p for p in trail["pins"]}
    load = pins["ext.tickets"]["source_load"]
    assert load["dlt.load-id"] == "load-a-tickets" and load["source"] == "helpdesk", pins["ext.tickets"]
    assert load["source.cursor-after"] == lake.table("ext.tickets").properties["agentlake.source.cursor"]
    assert not [p for p in trail["problems"] if "carry neither" in p], "an ext or live part has no log lines to name"
    # A source never loaded: pinned as no snapshot, which the walk explains rather than calls a fault.
    assert pins["ext.ticket_comments"]["snapshot_id"] is None and not pins["ext.ticket_comments"]["problems"]
    assert "had no snapshot when the artifact read it" in pins["ext.ticket_comments"]["checks_note"]
    assert trail["segments"] and all(s["checksum_ok"] for s in trail["segments"])
    (live,) = trail["replay"]["live"]
    assert (live["part"], live["status"]) == ("ticket_now", REPRODUCIBLE) and len(live["fingerprint"]) == 64

    set_ticket(db, "t000003", status="closed")  # the helpdesk moved on: the pinned parts still reproduce
    assert main(["audit", run_id]) == 0
    out = capsys.readouterr().out
    assert "replay: reproducible" in out and "live part ticket_now (helpdesk.tickets" in out and "source changed" in out
    assert "source changed" in render_html(audit(lake, run_id))
