"""External sources: dlt loads the demo helpdesk, AgentLake gates each load and publishes it into ``ext`` in one commit.

Real components throughout: a SQLite helpdesk database, dlt's ``sql_database`` source, the SQLite
Iceberg catalog and Great Expectations; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from agentlake.config import S3Settings, Settings
from agentlake.context.query import query
from agentlake.errors import ConfigError
from agentlake.sources import helpdesk
from agentlake.sources.demo import write_demo_documents
from agentlake.sources.external import API_PAGE_SIZE, CURSOR_PROPERTY, held_loads, load, sources
from agentlake.tables.external import EXT_TABLES
from agentlake.tables.lake import Lake
from tests.conftest import S3_KEY, S3_SECRET

CANARY = "canary-src-pw-41c9"


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentlake.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _source_rows(path: Path, table: str, key: str) -> set[tuple[str, str]]:
    """The live rows of a source table as (key, updated_at) pairs."""
    with sqlite3.connect(path) as con:
        rows = con.execute(f"SELECT {key}, updated_at FROM {table} WHERE is_deleted = 0").fetchall()  # noqa: S608
    con.close()
    return {(k, u) for k, u in rows}


def _ext_rows(rows: pa.Table, key: str) -> set[tuple[str, str]]:
    return {(k, u.strftime("%Y-%m-%d %H:%M:%S.%f"))
            for k, u in zip(rows.column(key).to_pylist(), rows.column("updated_at").to_pylist(), strict=True)}


@pytest.mark.parametrize("store", ["local", "s3"])
def test_from_a_fresh_home_sources_load_publishes_the_demo_helpdesk_into_ext_and_a_query_returns_its_rows(
        tmp_path: Path, store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if store == "s3":  # the same load against the S3-compatible server on loopback
        s3: S3Settings = request.getfixturevalue("s3_settings")
        for name, value in {"AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": s3.bucket,
                            "AGENTLAKE_S3_PREFIX": s3.prefix, "AGENTLAKE_S3_ENDPOINT": str(s3.endpoint),
                            "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}.items():
            monkeypatch.setenv(name, value)
    made = _cli("sources", "demo", "--json")
    assert made.returncode == 0, made.stderr
    db = Path(json.loads(made.stdout)["path"])
    loaded = _cli("sources", "load", "--json")
    assert loaded.returncode == 0, loaded.stderr
    loads = {x["table"]: x for x in json.loads(loaded.stdout)["loads"]}
    assert set(loads) == {"ext.tickets", "ext.customers", "ext.documents"}
    assert all(x["published_snapshot_id"] and not x["held"] for x in loads.values())
    assert loads["ext.documents"]["rows"] == json.loads(made.stdout)["documents_written"] > 0
    lake = Lake(Settings.from_env())
    tickets = lake.table("ext.tickets")
    assert tickets.location().startswith("s3://" if store == "s3" else "file:")
    assert _ext_rows(tickets.scan().to_arrow(), "ticket_id") == _source_rows(db, "tickets", "ticket_id")
    for spec in (t for t in EXT_TABLES if t.name in loads):  # the columns requests are checked against are published
        published = lake.table(spec.name).schema().as_arrow()
        assert [(f.name, pa.large_string() if f.type == pa.string() else f.type) for f in spec.arrow_schema()] == [
            (f.name, f.type) for f in published], spec.name
    assert query(lake, "SELECT count(*) AS n FROM ext.tickets").column("n").to_pylist() == [
        len(_source_rows(db, "tickets", "ticket_id"))]
    summary = tickets.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert summary["agentlake.dlt.load-id"] == loads["ext.tickets"]["load_id"]
    assert summary["agentlake.source.cursor-after"] == tickets.properties[CURSOR_PROPERTY]
    listed = _cli("sources", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {t["table"]: t for t in json.loads(listed.stdout)["tables"]}
    assert rows["ext.tickets"]["rows"] == len(_source_rows(db, "tickets", "ticket_id"))
    assert rows["ext.customers"]["snapshot_id"] == loads["ext.customers"]["published_snapshot_id"]


def test_a_changed_source_is_published_in_one_snapshot_per_table_and_a_concurrent_reader_never_sees_part_of_it(
        tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    db = helpdesk.create(settings.sources_home / "helpdesk.db", seed=3).path
    lake = Lake(settings)
    load(lake, ["helpdesk"])
    before = _source_rows(db, "tickets", "ticket_id")
    helpdesk.advance(db, 30)  # tickets opened, updated, closed and deleted; plans changed
    after = _source_rows(db, "tickets", "ticket_id")
    assert before != after and len(before - after) > 0
    tickets = lake.table("ext.tickets")
    snapshots_before = {s.snapshot_id for s in tickets.metadata.snapshots}
    seen: dict[int, set[tuple[str, str]]] = {}
    stop = threading.Event()

    def read() -> None:
        reader = Lake(settings).table("ext.tickets")
        while not stop.is_set():
            reader.refresh()
            snapshot = reader.current_snapshot()
            if snapshot is not None and snapshot.snapshot_id not in seen:
                seen[snapshot.snapshot_id] = _ext_rows(reader.scan(snapshot_id=snapshot.snapshot_id).to_arrow(),
                                                       "ticket_id")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        results = {x.table: x for x in load(lake, ["helpdesk"])}
    finally:
        stop.set()
        thread.join()
    assert all(x.published_snapshot_id for x in results.values()), results
    tickets.refresh()
    new = [s for s in tickets.metadata.snapshots if s.snapshot_id not in snapshots_before]
    assert len(new) == 1, "one load of a table is one snapshot of main"
    customers = lake.table("ext.customers")
    assert customers.current_snapshot().summary.additional_properties[  # type: ignore[union-attr]
        "agentlake.dlt.load-id"] == results["ext.customers"].load_id
    assert _ext_rows(tickets.scan().to_arrow(), "ticket_id") == after
    assert seen, "the reader read the table"
    for snapshot_id, rows in seen.items():
        assert rows in (before, after), f"snapshot {snapshot_id} held a partial load"
    again = {x.table: x for x in load(lake, ["helpdesk"])}
    assert again["ext.tickets"].unchanged and again["ext.tickets"].published_snapshot_id is None


def _helpdesk_without_keys(path: Path) -> None:
    """A copy of the demo helpdesk whose tickets table has no primary key, so it can hold a key twice."""
    seed = helpdesk.create(path.with_name("seed.db")).path
    with sqlite3.connect(path) as con:
        con.executescript(helpdesk.SCHEMA.replace(" PRIMARY KEY", ""))
        con.execute("ATTACH DATABASE ? AS seed", (str(seed),))
        for table in ("tickets", "customers", "ticket_comments"):
            con.execute(f"INSERT INTO {table} SELECT * FROM seed.{table}")  # noqa: S608
    con.close()


TICKET_TWICE = ("INSERT INTO tickets VALUES ('t999999', 'c00001', ?, 'open', 'high', '2026-01-05 10:00:00.000000', "
                "'2026-01-05 10:00:00.000000', NULL, 0)")
COMMENT_TWICE = "INSERT INTO ticket_comments VALUES ('m9999999', 't000001', 'agent', ?, '2026-01-05 10:00:00.000000', 0)"


def _insert_twice(db: Path, sql: str) -> None:
    """The row ``sql`` inserts, twice (its text column 'first copy', then 'second copy'): one key held twice."""
    with sqlite3.connect(db) as con:
        for copy in ("first copy", "second copy"):
            con.execute(sql, (copy,))
    con.close()


def test_a_load_with_duplicate_keys_is_held_publishes_nothing_and_says_why(tmp_path: Path) -> None:
    db = tmp_path / "broken" / "helpdesk.db"
    db.parent.mkdir()
    _helpdesk_without_keys(db)
    settings = Settings(home=tmp_path / "home", sources_sql_url=f"sqlite:///{db}")
    lake = Lake(settings)
    load(lake, ["helpdesk"])
    tickets = lake.table("ext.tickets")
    published = tickets.current_snapshot().snapshot_id  # type: ignore[union-attr]
    cursor = tickets.properties[CURSOR_PROPERTY]
    _insert_twice(db, TICKET_TWICE)
    results = {x.table: x for x in load(lake, ["helpdesk"])}
    held = results["ext.tickets"]
    assert held.held and held.published_snapshot_id is None
    assert "ticket_id_unique" in held.failed and "row_count_matches_merge" in held.failed
    tickets.refresh()
    assert tickets.current_snapshot().snapshot_id == published  # type: ignore[union-attr]
    assert tickets.properties[CURSOR_PROPERTY] == cursor
    assert "t999999" not in tickets.scan().to_arrow().column("ticket_id").to_pylist()
    (record,) = held_loads(tickets).values()
    assert "ticket_id_unique" in record["failed"]
    staged = tickets.scan(snapshot_id=record["snapshot_id"]).to_arrow().column("ticket_id").to_pylist()
    assert staged.count("t999999") == 2, "the held load stays inspectable on its branch"
    listed = _cli("sources", "ls", env={"AGENTLAKE_HOME": str(settings.home),
                                        "AGENTLAKE_SOURCES_SQL_URL": f"sqlite:///{db}"})
    assert "held=" in listed.stdout and "ticket_id_unique" in listed.stdout
    with sqlite3.connect(db) as con:  # the source fixed: the next load publishes, the held record is gone
        con.execute("DELETE FROM tickets WHERE subject = 'second copy'")
    con.close()
    fixed = {x.table: x for x in load(lake, ["helpdesk"])}["ext.tickets"]
    assert fixed.published_snapshot_id and not fixed.held
    tickets.refresh()
    assert tickets.scan().to_arrow().column("ticket_id").to_pylist().count("t999999") == 1
    assert not held_loads(tickets)


def test_a_source_that_cannot_be_reached_fails_in_one_line_that_never_shows_its_url_secret(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://agent:{CANARY}@127.0.0.1:1/helpdesk"
    failed = _cli("sources", "load", env={"AGENTLAKE_SOURCES_SQL_URL": url})
    assert failed.returncode == 1
    assert failed.stderr.startswith("agentlake: source helpdesk:") and failed.stderr.count("\n") == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert CANARY not in failed.stdout + failed.stderr
    bad = _cli("sources", "load", "crm")
    assert bad.returncode == 2 and "no source named 'crm'" in bad.stderr and "helpdesk" in bad.stderr


def test_the_demo_helpdesk_is_deterministic_for_a_seed_and_moves_forward(tmp_path: Path) -> None:
    one = helpdesk.advance(helpdesk.create(tmp_path / "a.db", seed=7).path, 12)
    two = helpdesk.advance(helpdesk.create(tmp_path / "b.db", seed=7).path, 12)
    assert (one.tickets, one.customers, one.now) == (two.tickets, two.customers, two.now)
    assert _source_rows(one.path, "tickets", "ticket_id") == _source_rows(two.path, "tickets", "ticket_id")
    assert one.tickets > helpdesk.INITIAL_TICKETS and one.step == 12


def test_the_ext_assets_materialize_on_a_real_instance_with_their_snapshot_and_a_held_load_fails_their_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_api: Callable[[Path], None]) -> None:
    from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, materialize

    from assets.sources import SOURCES_GROUP, build_source_assets
    from platform_defs.resources import LakeResource

    db = tmp_path / "broken" / "helpdesk.db"
    db.parent.mkdir()
    _helpdesk_without_keys(db)
    monkeypatch.setenv("AGENTLAKE_SOURCES_SQL_URL", f"sqlite:///{db}")
    serve_api(db)
    settings = Settings.from_env()
    write_demo_documents(settings.documents_dir)
    defs = build_source_assets(settings)
    resources = {"lake": LakeResource(home=str(settings.home))}
    tickets, customers, comments, documents = (AssetKey(["ext", t]) for t in (
        "tickets", "customers", "ticket_comments", "documents"))
    with DagsterInstance.ephemeral() as instance:
        first = materialize(defs, selection=AssetSelection.groups(SOURCES_GROUP).materializable(), resources=resources, instance=instance)
        assert first.success
        lake = Lake(settings)
        published = {e.asset_key: e.materialization.metadata for e in first.get_asset_materialization_events()}
        assert set(published) == {tickets, customers, comments, documents}
        assert published[documents]["snapshot_id"].value == str(
            lake.table("ext.documents").current_snapshot().snapshot_id)  # type: ignore[union-attr]
        table = lake.table("ext.tickets")
        assert published[tickets]["snapshot_id"].value == str(table.current_snapshot().snapshot_id)  # type: ignore[union-attr]
        assert published[tickets]["cursor"].value == table.properties[CURSOR_PROPERTY]
        assert published[tickets]["dlt_load_id"].value == table.current_snapshot().summary.additional_properties[  # type: ignore[union-attr]
            "agentlake.dlt.load-id"]
        checks = {(c.asset_key, c.check_name): c.passed for c in first.get_asset_check_evaluations()}
        assert (tickets, "ticket_id_unique") in checks and all(checks.values()), checks
        before = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
        _insert_twice(db, TICKET_TWICE)
        second = materialize(defs, selection=AssetSelection.groups(SOURCES_GROUP).materializable(), resources=resources,
                             instance=instance)
        assert second.success
        reported = {e.asset_key: e.materialization.metadata for e in second.get_asset_materialization_events()}
        assert reported[tickets]["held"].value is True and reported[tickets]["published"].value is False
        assert reported[tickets]["snapshot_id"].value == str(before)
        checks = {(c.asset_key, c.check_name): c for c in second.get_asset_check_evaluations()}
        assert not checks[(tickets, "ticket_id_unique")].passed
        assert not checks[(tickets, "row_count_matches_merge")].passed
        assert checks[(tickets, "ticket_id_not_null")].passed and checks[(customers, "customer_id_unique")].passed
        assert checks[(comments, "comment_id_unique")].passed
        assert checks[(documents, "doc_id_unique")].passed and checks[(documents, "content_hash_matches_body")].passed
        assert "held_load_id" in checks[(tickets, "ticket_id_unique")].metadata
        table.refresh()
        assert table.current_snapshot().snapshot_id == before  # type: ignore[union-attr]
        latest = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(tickets, "ticket_id_unique"))
        assert latest is not None and latest.event is not None


@pytest.fixture
def serve_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Serves the helpdesk REST API over a database on loopback and points the ``helpdesk_api`` source at it."""
    servers: list[ThreadingHTTPServer] = []

    def serve(db: Path) -> None:
        servers.append(helpdesk.serve(db))
        monkeypatch.setenv("AGENTLAKE_SOURCES_API_URL", f"http://127.0.0.1:{servers[-1].server_address[1]}")

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_rest_api_source_loads_ticket_comments_page_by_page_and_a_change_is_one_snapshot(
        tmp_path: Path, serve_api: Callable[[Path], None]) -> None:
    settings = Settings.from_env()
    db = helpdesk.create(settings.sources_home / "helpdesk.db", seed=5).path
    helpdesk.advance(db, 200)  # more comments than one page (API_PAGE_SIZE) holds
    serve_api(db)
    lake = Lake(Settings.from_env())
    (first,) = load(lake, ["helpdesk_api"])
    assert first.table == "ext.ticket_comments" and first.published_snapshot_id and not first.held
    comments = lake.table("ext.ticket_comments")
    assert first.rows_loaded > API_PAGE_SIZE
    assert _ext_rows(comments.scan().to_arrow(), "comment_id") == _source_rows(db, "ticket_comments", "comment_id")
    before = {s.snapshot_id for s in comments.metadata.snapshots}
    helpdesk.advance(db, 20)
    (second,) = load(lake, ["helpdesk_api"])
    assert second.published_snapshot_id and second.cursor_before == first.cursor_after
    assert second.rows_loaded < first.rows_loaded, "the updated_since cursor: only what changed is fetched"
    comments.refresh()
    assert len([s for s in comments.metadata.snapshots if s.snapshot_id not in before]) == 1
    assert _ext_rows(comments.scan().to_arrow(), "comment_id") == _source_rows(db, "ticket_comments", "comment_id")
    (again,) = load(lake, ["helpdesk_api"])
    assert again.unchanged and again.published_snapshot_id is None
    summary = comments.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert summary["agentlake.dlt.load-id"] == second.load_id and summary["agentlake.source"] == "helpdesk_api"


def test_a_rest_api_load_with_duplicate_comment_ids_is_held_and_publishes_nothing(
        tmp_path: Path, serve_api: Callable[[Path], None]) -> None:
    db = tmp_path / "broken" / "helpdesk.db"
    db.parent.mkdir()
    _helpdesk_without_keys(db)
    serve_api(db)
    lake = Lake(Settings.from_env())
    (first,) = load(lake, ["helpdesk_api"])
    comments = lake.table("ext.ticket_comments")
    published = comments.current_snapshot().snapshot_id  # type: ignore[union-attr]
    _insert_twice(db, COMMENT_TWICE)
    (held,) = load(lake, ["helpdesk_api"])
    assert held.held and "comment_id_unique" in held.failed and held.published_snapshot_id is None
    comments.refresh()
    assert comments.current_snapshot().snapshot_id == published  # type: ignore[union-attr]
    assert "m9999999" not in comments.scan().to_arrow().column("comment_id").to_pylist()
    assert held.cursor_after == first.cursor_after


def test_a_rest_source_that_is_not_configured_is_left_out_of_a_load_and_named_when_asked_for() -> None:
    assert [s.name for s in sources(None, Settings.from_env())] == ["helpdesk", "documents"]
    with pytest.raises(ConfigError, match="AGENTLAKE_SOURCES_API_URL"):
        sources(["helpdesk_api"], Settings.from_env())


def test_make_run_creates_the_demo_helpdesk_when_missing_and_leaves_a_configured_database_alone(
        tmp_path: Path) -> None:
    from platform_defs.launcher import demo_helpdesk

    settings = Settings(home=tmp_path / "home")
    made = demo_helpdesk(settings)
    assert made == settings.sources_home / "helpdesk.db" and helpdesk.state(made).tickets == helpdesk.INITIAL_TICKETS
    assert (settings.documents_dir / "kb-articles" / "000000.md").is_file(), "the demo documents are written too"
    assert demo_helpdesk(Settings(home=tmp_path / "other", sources_sql_url="sqlite:////elsewhere.db",
                                  sources_documents_dir=tmp_path / "docs")) is None
    assert not (tmp_path / "other").exists() and not (tmp_path / "docs").exists()


def test_the_documents_source_loads_a_folder_with_dlt_through_the_gate_a_changed_file_is_a_new_version_and_no_file_is_lost(
        tmp_path: Path) -> None:
    from agentlake.sources.demo import corpus_sources
    from agentlake.sources.documents import MAX_DOCUMENT_BYTES, corpus, load_documents, rows_of
    from agentlake.sources.external import LOAD_ID_PROPERTY

    settings = Settings(home=tmp_path / "home")
    lake = Lake(settings)
    folder = settings.documents_dir
    assert {x.table: x for x in load(lake, ["documents"])}["ext.documents"].unchanged, "no folder yet: nothing loaded"
    written = write_demo_documents(folder)
    (first,) = load(lake, ["documents"])
    assert first.published_snapshot_id and first.rows == written == len(corpus(corpus_sources()))
    table = lake.table("ext.documents")
    summary = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert summary["agentlake.dlt.load-id"] == first.load_id == table.properties[LOAD_ID_PROPERTY]
    # The folder's rows are the corpus' rows: the agents' own seeding of the corpus finds nothing to add.
    assert load_documents(lake, rows_of(corpus(corpus_sources()))).added == 0
    (again,) = load(lake, ["documents"])
    assert again.unchanged and lake.table("ext.documents").current_snapshot().snapshot_id == first.published_snapshot_id  # type: ignore[union-attr]

    # One changed file and one new, among hostile ones: the good two publish in one snapshot, the rest are named.
    changed = folder / "kb-articles" / "000001.md"
    changed.write_text(changed.read_text() + "\nrevision: 2\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "escalations.txt").write_text("When to escalate\n\ntopic: escalate\n")
    (folder / "kb-articles" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "huge.md").write_bytes(b"x" * (MAX_DOCUMENT_BYTES + 1))
    (folder / "report.pdf").write_bytes(b"%PDF-1.7")
    outside = tmp_path / "secret.md"
    outside.write_text("not for agents")
    (folder / "leak.md").symlink_to(outside)
    (second,) = load(lake, ["documents"])
    assert second.published_snapshot_id and not second.held
    assert {s["path"]: s["reason"] for s in second.skipped} == {
        "huge.md": f"{MAX_DOCUMENT_BYTES + 1} bytes, more than the {MAX_DOCUMENT_BYTES} a document may hold",
        "kb-articles/latin1.txt": "not UTF-8 text (byte 3)",
        "leak.md": "a link that leads out of the documents folder",
        "report.pdf": "not a document (.pdf; the documents are .md, .markdown, .txt)"}
    table.refresh()
    snapshot = table.current_snapshot()
    assert snapshot.parent_snapshot_id == first.published_snapshot_id, "one commit for the whole load"  # type: ignore[union-attr]
    assert second.rows == written + 2
    versions = query(lake, "SELECT body FROM ext.documents WHERE doc_id = 'kb-articles/000001' ORDER BY updated_at")
    assert len(versions) == 2 and versions.column("body").to_pylist()[-1].endswith("revision: 2\n")
    notes = query(lake, "SELECT title, body FROM ext.documents WHERE doc_id = 'notes/escalations'").to_pylist()
    assert notes == [{"title": "When to escalate", "body": "When to escalate\n\ntopic: escalate\n"}]
    assert not query(lake, "SELECT doc_id FROM ext.documents WHERE body LIKE '%not for agents%'").num_rows

    # Two files that are one document (the same id): the load is held, nothing publishes, and the table says why.
    (folder / "kb-articles" / "000002.txt").write_text("another body for the same id\n")
    (held,) = load(lake, ["documents"])
    assert held.held and held.published_snapshot_id is None and "doc_id_unique" in held.failed
    table.refresh()
    assert table.current_snapshot().snapshot_id == snapshot.snapshot_id  # type: ignore[union-attr]
    (record,) = held_loads(table).values()
    assert record["failed"] == ["doc_id_unique"]
    listed = _cli("sources", "ls", env={"AGENTLAKE_HOME": str(settings.home)})
    assert "doc_id_unique" in listed.stdout, listed.stdout
    (folder / "kb-articles" / "000002.txt").unlink()  # fixed: the next load clears the held record
    (fixed,) = load(lake, ["documents"])
    assert not fixed.held and not held_loads(lake.table("ext.documents"))
