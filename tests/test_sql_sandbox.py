"""The SQL sandbox against someone trying to break out of it: every entry point refuses, and nothing is written.

The corpus holds writes (direct, hidden behind EXPLAIN ANALYZE or a second statement), reads of
host files and URLs, settings and secrets, pragmas, nested ``query()`` calls, macros, attach,
export and extension loading. Each statement is given to ``query``, to context assembly (what
``context build --sql`` and specs run), to the CLI, and to replay of a well-formed artifact whose
stored request carries it. None may run, each gets a clear refusal, and afterwards neither the
host folder the statements aim at nor the object store has gained or changed a file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from agentlake.cli import main
from agentlake.context.assembly import ContextEngine, ContextRequest, InvalidRequest, assemble, load_artifact
from agentlake.context.query import query
from agentlake.context.replay import REPRODUCIBLE, replay
from agentlake.context.sandbox import QueryRefused
from agentlake.tables.lake import Lake
from tests.test_context import T0, _ingest, _lake, _run_events

pytestmark = pytest.mark.integration

# {out}: a host folder outside the lake; {wh}: the lake's own warehouse folder.
HOSTILE = [
    # writes, directly or hidden
    "COPY (SELECT 1) TO '{out}/copy.csv'",
    "EXPLAIN ANALYZE COPY (SELECT * FROM raw.events) TO '{out}/explain.csv'",
    "EXPLAIN SELECT * FROM raw.events",
    "SELECT 1; COPY (SELECT 1) TO '{out}/second.csv'",
    "SELECT * FROM raw.events -- x\n; COPY (SELECT 1) TO '{out}/comment.csv'",
    "COPY (SELECT 1) TO '{wh}/raw/events/data/overwrite.parquet' (FORMAT parquet)",
    "CREATE TABLE t AS SELECT * FROM raw.events",
    "INSERT INTO raw.events SELECT * FROM raw.events",
    "UPDATE raw.events SET run_id = NULL",
    "DELETE FROM raw.events",
    "DROP VIEW raw.events",
    "CREATE OR REPLACE VIEW raw.events AS SELECT 1 AS event_id",
    "CREATE MACRO leak(x) AS x",
    "CREATE OR REPLACE TEMP MACRO t() AS TABLE SELECT * FROM read_text('/etc/passwd')",
    "EXPORT DATABASE '{out}/export'",
    "ATTACH '{out}/attached.db' AS other",
    "ATTACH ':memory:' AS other",
    "DETACH memory",
    "USE system",
    "CHECKPOINT",
    "VACUUM",
    # extensions and settings
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA database_list",
    "SELECT * FROM pragma_database_list()",
    "SELECT * FROM duckdb_settings()",
    "SELECT current_setting('s3_secret_access_key')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM which_secret('s3://bucket/key', 's3')",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM information_schema.tables",
    # host files and the network
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM READ_TEXT('/etc/passwd')",
    'SELECT * FROM "read_text"(\'/etc/passwd\')',
    "FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{wh}/**/*.parquet')",
    "SELECT * FROM iceberg_scan('{wh}/raw/events')",
    "SELECT * FROM iceberg_metadata('{wh}/raw/events')",
    "SELECT * FROM parquet_metadata('{wh}/raw/events/data/x.parquet')",
    "SELECT * FROM read_json_auto('http://127.0.0.1:9/x.json')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM sqlite_scan('{out}/x.db', 't')",
    # the same, nested inside an innocent-looking query
    "SELECT * FROM query('SELECT * FROM raw.events')",
    "SELECT * FROM query_table('raw.events')",
    "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM raw.events, x",
    "SELECT (SELECT content FROM read_text('/etc/passwd')) FROM raw.events",
    "SELECT * FROM raw.events WHERE run_id IN (SELECT file FROM glob('/*'))",
    "SELECT * FROM raw.events, LATERAL (SELECT * FROM read_text('/etc/passwd'))",
    "SELECT * FROM raw.events WHERE run_id = current_setting('allowed_directories')",
]

FINE = [
    "SELECT count(*) AS n FROM raw.events",
    "WITH r AS (SELECT run_id FROM raw.events) SELECT count(DISTINCT run_id) AS n FROM r",
    "SELECT e.type, count(*) AS n FROM raw.events e JOIN facts.agent_runs a USING (run_id) GROUP BY e.type",
    "SELECT i FROM range(3) t(i), raw.events LIMIT 2",
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = _lake(tmp_path_factory.mktemp("sandbox"))
    _ingest(lake, _run_events("r1", T0) + _run_events("r2", T0))
    return lake


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def watched(lake: Lake, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(out, warehouse): afterwards ``out`` is still empty and the store has changed no file it had."""
    out = tmp_path / "out"
    out.mkdir()
    warehouse = lake.settings.store_root / "warehouse"
    before = _files(lake.settings.store_root)
    yield out, warehouse
    assert list(out.iterdir()) == [], "a hostile statement wrote a file on the host"
    after = _files(lake.settings.store_root)
    changed = [k for k, sha in before.items() if after.get(k) != sha]
    assert changed == [], f"a hostile statement changed or removed files of the store: {changed}"
    written = [k for k in after if k not in before and "/artifacts/" not in f"/{k}" and not k.startswith("pins/")]
    assert [k for k in written if not k.startswith("log/")] == [], written


def _fill(sql: str, out: Path, warehouse: Path) -> str:
    return sql.replace("{out}", str(out)).replace("{wh}", str(warehouse))


def test_the_corpus_is_large_and_the_lakes_own_queries_still_run(lake: Lake) -> None:
    assert len(HOSTILE) >= 40
    for sql in FINE:
        assert query(lake, sql).num_rows >= 1, sql


def _is_one_select(sql: str) -> bool:
    """An oracle apart from the sandbox: DuckDB's own parser on a bare connection."""
    import duckdb

    try:
        statements = duckdb.connect().extract_statements(sql)
    except duckdb.Error:
        return False
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


@pytest.mark.parametrize("sql", HOSTILE)
def test_query_refuses_each_hostile_statement(lake: Lake, watched: tuple[Path, Path], sql: str) -> None:
    # Refused by the sandbox's statement check before anything runs (QueryRefused), not merely failing
    # in the engine: the connection's own fence is a second line beneath it, not a reason to pass.
    with pytest.raises(QueryRefused) as refused:
        query(lake, _fill(sql, *watched))
    message = str(refused.value).strip()
    assert message and "\n" not in message, message
    if not _is_one_select(_fill(sql, *watched)):
        assert "exactly one SELECT" in message, message


def test_context_assembly_refuses_each_hostile_statement(lake: Lake, watched: tuple[Path, Path]) -> None:
    engine = ContextEngine(lake)
    try:
        for n, sql in enumerate(HOSTILE):
            with pytest.raises(InvalidRequest):
                assemble(lake, ContextRequest.from_sql(_fill(sql, *watched)), run_id=f"hostile-{n}",
                         agent_id="attacker", engine=engine)
        ok = assemble(lake, ContextRequest.from_sql(FINE[0]), run_id="fine", agent_id="triage", engine=engine)
        assert ok.records["result"].num_rows == 1
    finally:
        engine.close()


@pytest.mark.parametrize("sql", HOSTILE[:3] + HOSTILE[27:30] + HOSTILE[33:35] + HOSTILE[47:49])
def test_the_cli_refuses_in_one_line(lake: Lake, watched: tuple[Path, Path], sql: str,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENTLAKE_HOME", str(lake.settings.home))
    filled = _fill(sql, *watched)
    assert main(["query", filled]) != 0
    assert main(["context", "build", "--run-id", f"cli-{uuid.uuid4().hex[:8]}", "--sql", filled]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("agentlake: ") for line in err), err


def test_replay_of_an_artifact_carrying_hostile_sql_runs_none_of_it(lake: Lake, watched: tuple[Path, Path]) -> None:
    from agentlake.context.assembly import write_artifact

    made = assemble(lake, ContextRequest.from_sql(FINE[0]), run_id="honest", agent_id="triage")
    manifest = orjson.loads(lake.store.get(made.artifact.key))
    for n, sql in enumerate(HOSTILE[:6] + HOSTILE[33:36]):
        forged = {**manifest, "run_id": f"forged-{n}", "request": {"sql": _fill(sql, *watched)},
                  "created_at": datetime.now(UTC).isoformat()}
        forged["parts"] = {name: dict(part) for name, part in manifest["parts"].items()}
        records = load_artifact(lake.store, made.artifact.key).records
        key = write_artifact(lake.store, forged, {name: table for name, table in records.items() if table}).key
        (report,) = replay(lake, key)
        assert report.status != REPRODUCIBLE, sql
        assert any("SELECT" in p or "lake" in p for p in report.problems), report.problems
