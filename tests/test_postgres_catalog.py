"""The Postgres catalog URI the README shows, against a real PostgreSQL server.

The whole loop runs through the CLI as a user would run it: emit, ingest, query, build a context
artifact and replay it, reconcile; then two ingest processes side by side, whose commits race on the
server's catalog table. No output ever holds the catalog's password.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli_runner import run_in_one_process
from tests.conftest import PostgresServer

pytestmark = pytest.mark.integration


class Session:
    """The CLI against one home and one catalog database, checking that no answer holds the password."""

    def __init__(self, tmp_path: Path, uri: str, password: str) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLAKE_", "AWS_"))}
        self.env = {**base, "AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_CATALOG_URI": uri}
        self.cwd = tmp_path
        self.password = password

    def run(self, *argvs: tuple[str, ...]) -> list[Any]:
        """The commands in turn, in one process; their JSON answers."""
        answers = run_in_one_process([((*argv, "--json"), self.env) for argv in argvs], env=self.env, cwd=self.cwd)
        for done in answers:
            assert self.password not in done.stdout + done.stderr, done.args
            assert done.returncode == 0, (done.args, done.stderr[-3000:])
        return [orjson.loads(done.stdout) for done in answers]

    def side_by_side(self, *argvs: tuple[str, ...]) -> list[Any]:
        """Each command in a process of its own, all at once."""
        with ThreadPoolExecutor(len(argvs)) as pool:
            return [answer for [answer] in pool.map(self.run, argvs)]


def test_the_readme_postgres_catalog_uri_runs_the_whole_loop_and_two_ingests_at_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    uri = postgres.database()
    assert uri.startswith(f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:")
    cli = Session(tmp_path, uri, postgres.password)

    emitted, ingested, queried, built, replayed, *more = cli.run(
        ("demo", "--runs", "6", "--seed", "11", "--no-context"), ("ingest",), ("query", "SELECT count(*) AS n FROM raw.events"),
        ("context", "build", "--run-id", "r-pg", "--sql", "SELECT event_id, type FROM raw.events ORDER BY event_id LIMIT 7"),
        ("replay", "r-pg"), *[("demo", "--runs", "4", "--seed", str(seed), "--no-context") for seed in (12, 13, 14)])
    assert ingested["rows"] == emitted["events"] and ingested["quarantined"] == 0
    assert queried["rows"] == [{"n": emitted["events"]}]
    assert built["record_count"] == 7
    [replay] = replayed["replays"]
    assert replay["status"] == "reproducible", replay

    # New segments, two ingests at once: their commits race on the server's catalog table; both must
    # finish, and every line of the log (the context_assembled event too) must be a row once.
    first, second = cli.side_by_side(("ingest",), ("ingest",))
    assert first["segments"] + second["segments"] >= len(more), (first, second)
    counted, log, reconciled = cli.run(
        ("query", "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM raw.events"), ("log", "ls"), ("reconcile",))
    assert counted["rows"] == [{"n": log["lines"], "d": log["lines"]}], (first, second)
    assert log["lines"] == emitted["events"] + sum(m["events"] for m in more) + 1
    days = reconciled["days"]
    assert days and all(day["balanced"] for day in days), days
