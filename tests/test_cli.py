"""Every CLI command given a bad argument answers in one line that names the problem, without a traceback.

The commands are enumerated from the parser, so a new command is walked with an unknown flag,
each of its required arguments left out, a bad setting and a bad day without anyone adding a
case; and it must bring its own cases (``SPECIFIC``) for the inputs only it takes. Each case runs
the real CLI as a subprocess (``python -m agentlake.cli``) against one shared ``AGENTLAKE_HOME``;
the cases run in a few threads, and each test asserts one recorded answer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentlake import cli
from agentlake.log.segments import segment_key
from tests.cli_runner import run_in_one_process

CANARY = "canary-pw-7f3a"  # a catalog password that must never be printed back
# A password with quotes in it: a message that quoted it back escaped would hide it from a plain search,
# so the search is for its core, which survives any escaping.
QUOTED_CANARY, QUOTED_CORE = "it's-\"q\"-5e1d", "5e1d"


@dataclass(frozen=True)
class Case:
    """One bad invocation: ``{tmp}`` in an argument or setting is the shared scratch folder."""

    name: str
    argv: tuple[str, ...]
    names: str  # what the one line must name
    env: Mapping[str, str] = field(default_factory=dict)
    status: int = 2  # 2: the input or the environment must change; 1: the work did not come out whole


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command of the parser (``log ls``, ``context build``, ...) with its own parser."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
        return
    for name, sub in groups[0].choices.items():
        yield from leaf_commands(sub, (*path, name))


# A valid value for each required argument, so that a case gets past the arguments it does not test.
SAMPLE = {"file": "-", "paths": "{tmp}/a-folder", "sql": "SELECT 1", "ref": "some-run", "key": "log/v1/x",
          "run_id": "r-1", "assets": "raw/events", "start": "2026-11-01", "end": "2026-11-02",
          "baseline": "2.3.1", "candidate": "2.4.0", "name": "a-dataset"}


def _required(parser: argparse.ArgumentParser) -> list[tuple[str, list[str]]]:
    """Each required input: what argparse calls it, and the arguments that give it a valid value."""
    found: list[tuple[str, list[str]]] = []
    for action in parser._actions:
        if action.required and not isinstance(action, argparse._SubParsersAction):
            value = SAMPLE[action.dest]
            label = action.option_strings[0] if action.option_strings else (action.metavar or action.dest)
            found.append((str(label), [*action.option_strings[:1], value]))
    for group in parser._mutually_exclusive_groups:
        if group.required:
            first = group._group_actions[0]
            found.append((first.option_strings[0], [first.option_strings[0], SAMPLE[first.dest]]))
    return found


def generic_cases() -> list[Case]:
    cases = []
    bad_settings = [("AGENTLAKE_INGEST_INTERVAL_S", "abc"), ("AGENTLAKE_STORE", "ftp")]
    for i, (command, parser) in enumerate(leaf_commands(cli.build_parser())):
        label = " ".join(command)
        required = _required(parser)
        valid = [arg for _, args in required for arg in args]
        cases.append(Case(f"{label}: an unknown flag", (*command, *valid, "--no-such-flag"), "--no-such-flag"))
        for missing, _ in required:
            rest = [arg for name, args in required if name != missing for arg in args]
            cases.append(Case(f"{label}: {missing} left out", (*command, *rest), missing))
        variable, value = bad_settings[i % len(bad_settings)]
        cases.append(Case(f"{label}: a bad setting {variable}", (*command, *valid), variable, {variable: value}))
        for action in parser._actions:
            if action.type is cli._day:
                flag = action.option_strings[0]
                cases.append(Case(f"{label}: {flag} not a day", (*command, *valid, flag, "2024-02-30"), "2024-02-30"))
    return cases


LONG_RUN_ID = "r" * 2000
# Refused before anything is read: should the check be gone, the store's retries must not hold the test up.
QUICK = {"AGENTLAKE_STORE_RETRY_S": "1"}
# A database nobody listens on (port 9, discard, is closed on loopback), reached with a password.
DOWN_CATALOG = {"AGENTLAKE_CATALOG_URI": f"postgresql+psycopg2://agentlake:{QUOTED_CANARY}@127.0.0.1:9/catalog"}
OUT_OF_RANGE = "0001-01-01T00:00:00+14:00"  # a valid ISO time with no UTC date

# A key of the writer's exact shape (its checksum is 16 hex digits), for the cases that move it out of the log.
SHAPED_SEGMENT = segment_key(arrival=datetime(2024, 5, 1, 12, tzinfo=UTC), producer="nobody", first_seq=0,
                             lines=1, digest="0" * 16)
ABSENT_SEGMENT = segment_key(arrival=datetime(2024, 5, 1, 12, tzinfo=UTC), producer="nobody", first_seq=0,
                             lines=1, digest="0" * 64)

SPECIFIC: dict[str, list[Case]] = {
    "emit": [
        Case("emit: a missing file", ("emit", "{tmp}/missing.ndjson"), "missing.ndjson"),
        Case("emit: a folder instead of a file", ("emit", "{tmp}/a-folder"), "a-folder"),
        Case("emit: AGENTLAKE_HOME a file", ("emit", "-"), "AGENTLAKE_HOME", {"AGENTLAKE_HOME": "{tmp}/a-file"}),
    ],
    "import-otlp": [
        # A folder is walked for trace files, so only a path that is not there is a user error.
        Case("import-otlp: a missing file among good ones", ("import-otlp", "{tmp}/a-folder", "{tmp}/missing.json"),
             "missing.json"),
    ],
    "demo": [
        Case("demo: a negative run count", ("demo", "--runs", "-3"), "-3"),
        Case("demo: a share of bad lines above one", ("demo", "--bad-share", "1.5"), "1.5"),
        Case("demo: a rate of zero", ("demo", "--forever", "--rate", "0"), "rate"),
        Case("demo: a negative run count of -5", ("demo", "--runs", "-5"), "'-5' is not a count"),
        Case("demo: a share of bad lines of 2", ("demo", "--bad-share", "2"), "'2' is not a share"),
    ],
    "ingest": [
        Case("ingest: a fleet epoch that is not a time", ("ingest",), "AGENTLAKE_QUALITY_FLEET_EPOCH",
             {"AGENTLAKE_QUALITY_FLEET_EPOCH": "yesterday"}),
        Case("ingest: a day without its dashes", ("ingest", "--date", "20240101"), "'20240101' is not a day"),
        Case("ingest: a day of one-digit month and day", ("ingest", "--date", "2024-1-1"), "'2024-1-1' is not a day"),
        Case("ingest: an empty day", ("ingest", "--date", ""), "'' is not a day"),
    ],
    "publish": [
        Case("publish: an override without a reason", ("publish", "--override"), "--reason"),
    ],
    "query": [
        Case("query: a write", ("query", "DELETE FROM raw.events"), "DELETE"),
        Case("query: COPY to a host file", ("query", "COPY (SELECT 1) TO '{tmp}/out.csv'"), "COPY"),
        Case("query: ATTACH of a database", ("query", "ATTACH '{tmp}/other.db'"), "ATTACH"),
        Case("query: EXPLAIN ANALYZE of a COPY", ("query", "EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/out.csv'"),
             "EXPLAIN"),
        Case("query: an unknown table", ("query", "SELECT * FROM raw.no_such_table"), "no_such_table"),
        Case("query: SQL that does not parse", ("query", "SELEC 1"), "SELEC"),
        Case("query: an as-of that is not a time", ("query", "SELECT 1", "--as-of", "last tuesday"), "last tuesday"),
        Case("query: an as-of with no UTC date", ("query", "SELECT 1", "--as-of", OUT_OF_RANGE), OUT_OF_RANGE),
        Case("query: an as-of in ms past any date", ("query", "SELECT 1", "--as-of", "9" * 20), "9" * 20),
        Case("query: AGENTLAKE_HOME a file", ("query", "SELECT 1"), "AGENTLAKE_HOME", {"AGENTLAKE_HOME": "{tmp}/a-file"}),
        Case("query: a catalog database that is down", ("query", "SELECT 1"), "AGENTLAKE_CATALOG_URI", DOWN_CATALOG,
             status=1),
    ],
    "reconcile": [
        Case("reconcile: AGENTLAKE_HOME a file", ("reconcile",), "AGENTLAKE_HOME", {"AGENTLAKE_HOME": "{tmp}/a-file"}),
    ],
    "maintain": [
        Case("maintain: an unknown table", ("maintain", "--table", "raw.no_such_table"), "raw.no_such_table"),
        Case("maintain: a catalog URI of an unknown database", ("maintain",), "AGENTLAKE_CATALOG_URI",
             {"AGENTLAKE_CATALOG_URI": f"nosuchdb://agentlake:{CANARY}@db.example/catalog"}),
        Case("maintain: a table without its namespace", ("maintain", "--table", "nope"), "no table nope"),
        Case("maintain: an empty table name", ("maintain", "--table", ""), "no table ''"),
        Case("maintain: a catalog database that is down", ("maintain",), "127.0.0.1:9/catalog", DOWN_CATALOG, status=1),
    ],
    "backfill": [
        Case("backfill: --from after --to", ("backfill", "raw/events", "--from", "2026-11-02", "--to", "2026-11-01"),
             "--from 2026-11-02"),
    ],
    "context build": [
        Case("context build: a missing spec", ("context", "build", "--run-id", "r-1", "--spec", "{tmp}/missing.json"),
             "missing.json"),
        Case("context build: a folder as the spec", ("context", "build", "--run-id", "r-1", "--spec", "{tmp}/a-folder"),
             "a-folder"),
        Case("context build: a spec that is not JSON",
             ("context", "build", "--run-id", "r-1", "--spec", "{tmp}/not-json.json"), "not-json.json"),
        Case("context build: a spec that is a list", ("context", "build", "--run-id", "r-1", "--spec", "{tmp}/list.json"),
             "list.json"),
        Case("context build: a spec of an unknown table",
             ("context", "build", "--run-id", "r-1", "--spec", "{tmp}/unknown-table.json"), "raw.no_such_table"),
        Case("context build: SQL that writes", ("context", "build", "--run-id", "r-1", "--sql",
                                                "DELETE FROM raw.events"), "DELETE"),
        Case("context build: an empty run id", ("context", "build", "--run-id", "", "--sql",
                                                "SELECT * FROM raw.events"), "run id"),
        Case("context build: a run id of 2,000 characters",
             ("context", "build", "--run-id", LONG_RUN_ID, "--sql", "SELECT count(*) FROM raw.events"), "2,000 characters",
             QUICK),
        Case("context build: a run id with ..",
             ("context", "build", "--run-id", "../other-run", "--sql", "SELECT count(*) FROM raw.events"), "'..'", QUICK),
        Case("context build: a run id with .. inside",
             ("context", "build", "--run-id", "a..b", "--sql", "SELECT count(*) FROM raw.events"), "'a..b'", QUICK),
        Case("context build: an as-of with no UTC date",
             ("context", "build", "--run-id", "r-1", "--sql", "SELECT 1", "--as-of", OUT_OF_RANGE), OUT_OF_RANGE),
    ],
    "replay": [
        Case("replay: an empty reference", ("replay", ""), "run id ''"),
        Case("replay: a run that built nothing", ("replay", "no-such-run"), "no-such-run"),
        Case("replay: an artifact address that is not one", ("replay", "file:///x/artifacts/v1/dt=2024-05-01/abc.json"),
             "abc.json"),
        Case("replay: a run id of 2,000 characters", ("replay", LONG_RUN_ID), "2,000 characters", QUICK),
        Case("replay: a run id with ..", ("replay", "../other-run"), "'..'", QUICK),
    ],
    "sources ls": [
        Case("sources ls: AGENTLAKE_HOME a file", ("sources", "ls"), "AGENTLAKE_HOME", {"AGENTLAKE_HOME": "{tmp}/a-file"}),
    ],
    "sources load": [
        Case("sources load: an unknown source", ("sources", "load", "nosuchsource"), "nosuchsource"),
        Case("sources load: a source database that is down", ("sources", "load"), "AGENTLAKE_SOURCES_SQL_URL",
             {"AGENTLAKE_SOURCES_SQL_URL": f"postgresql+psycopg2://agentlake:{QUOTED_CANARY}@127.0.0.1:9/helpdesk"},
             status=1),
    ],
    "sources demo": [
        Case("sources demo: a negative advance", ("sources", "demo", "--advance", "-5"), "'-5' is not a count"),
    ],
    "audit": [
        Case("audit: an empty run id", ("audit", ""), "run id ''"),
        Case("audit: a run nobody made", ("audit", "no-such-run"), "no-such-run"),
    ],
    "eval run": [
        Case("eval run: a day given as a week", ("eval", "run", "--day", "2026-W48"), "2026-W48"),
    ],
    "eval compare": [
        Case("eval compare: a version no agent runs", ("eval", "compare", "--baseline", "9.9.9", "--candidate", "2.4.0"),
             "9.9.9"),
        Case("eval compare: versions of two agents", ("eval", "compare", "--baseline", "2.3.1", "--candidate", "1.0.0"),
             "1.0.0"),
    ],
    "eval dataset create": [
        Case("eval dataset create: a name that is not one", ("eval", "dataset", "create", "Bad Name", "--sql", "SELECT 1"),
             "Bad Name"),
    ],
    "eval dataset ls": [
        Case("eval dataset ls: a name that is not one", ("eval", "dataset", "ls", "../up"), "../up"),
    ],
    "log ls": [
        Case("log ls: an S3 store without a bucket", ("log", "ls"), "AGENTLAKE_S3_BUCKET", {"AGENTLAKE_STORE": "s3"}),
        Case("log ls: a bad day", ("log", "ls", "--date", "2024-13-01"), "'2024-13-01' is not a day"),
        Case("log ls: AGENTLAKE_HOME a file", ("log", "ls"), "AGENTLAKE_HOME", {"AGENTLAKE_HOME": "{tmp}/a-file"}),
    ],
    "log cat": [
        Case("log cat: an empty key", ("log", "cat", ""), "''"),
        Case("log cat: a key that is not a segment's", ("log", "cat", "log/v1/../secrets"), "log/v1/../secrets"),
        Case("log cat: a segment that is not in the log", ("log", "cat", ABSENT_SEGMENT), ABSENT_SEGMENT),
        Case("log cat: a segment key under another folder", ("log", "cat", f"x/{SHAPED_SEGMENT}"), "not a segment key"),
        Case("log cat: a segment key that climbs out with ..",
             ("log", "cat", SHAPED_SEGMENT.replace("log/v1/", "log/v1/../v1/", 1)), "not a segment key"),
        Case("log cat: a file URI instead of a key", ("log", "cat", f"file:///{SHAPED_SEGMENT}"), "not a segment key"),
        Case("log cat: a key of the store outside the log", ("log", "cat", "catalog.db"), "'catalog.db'"),
    ],
}

CASES = generic_cases() + [case for cases in SPECIFIC.values() for case in cases]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the cases name as ``{tmp}``: a folder, a plain file, three bad specs and the home."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "a-folder").mkdir()
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "not-json.json").write_text("{sources: [\n")
    (tmp / "list.json").write_text('[{"table": "raw.events"}]')
    (tmp / "unknown-table.json").write_text('{"sources": [{"table": "raw.no_such_table"}]}')
    return tmp


@pytest.fixture(scope="module")
def answers(scratch: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case run once against one shared home, in three batches side by side."""
    tmp = scratch
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLAKE_", "AWS_")) and k != "DAGSTER_HOME"}
    base["AGENTLAKE_HOME"] = str(tmp / "home")

    def run(batch: list[Case]) -> list[subprocess.CompletedProcess[str]]:
        return run_in_one_process(
            [([a.replace("{tmp}", str(tmp)) for a in case.argv],
              {**base, **{k: v.replace("{tmp}", str(tmp)) for k, v in case.env.items()}}) for case in batch],
            env=base, cwd=tmp)

    # Prepare the shared home once (catalog and tables), so parallel cases do not race to create it.
    [first] = run([Case("a good command", ("reconcile",), "")])
    assert first.returncode == 0, first.stderr
    batches = [CASES[i::3] for i in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        answered = [a for answers in pool.map(run, batches) for a in answers]
    results = dict(zip([c.name for batch in batches for c in batch], answered, strict=True))
    results["a good command"] = first
    return results


def test_every_command_of_the_parser_brings_cases_for_its_own_inputs() -> None:
    commands = {" ".join(command) for command, _ in leaf_commands(cli.build_parser())}
    assert commands == set(SPECIFIC), "add the new command's bad inputs to SPECIFIC"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_argument_is_answered_in_one_line_that_names_it(
    case: Case, answers: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    answer = answers[case.name]
    lines = answer.stderr.splitlines()
    assert "Traceback" not in answer.stderr, answer.stderr
    assert len(lines) == 1 and lines[0].strip(), answer.stderr
    assert lines[0].startswith("agentlake: "), lines[0]
    assert case.names in lines[0], lines[0]
    assert CANARY not in answer.stderr + answer.stdout
    assert QUOTED_CORE not in answer.stderr + answer.stdout
    assert answer.returncode == case.status, (answer.returncode, lines[0])


def test_a_refused_run_id_leaves_no_artifact_in_the_store(
    answers: dict[str, subprocess.CompletedProcess[str]], scratch: Path
) -> None:
    refused = [name for name in answers if "run id" in name]
    assert len(refused) >= 6 and all(answers[name].returncode == 2 for name in refused)
    artifacts = scratch / "home" / "store" / "artifacts"
    assert not artifacts.exists() or not [p for p in artifacts.rglob("*") if p.is_file()]


def test_a_refused_copy_writes_no_file(answers: dict[str, subprocess.CompletedProcess[str]], scratch: Path) -> None:
    assert answers["query: COPY to a host file"].returncode == 2
    assert not (scratch / "out.csv").exists()


def test_a_good_command_in_the_same_home_answers_without_complaint(
    answers: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    answer = answers["a good command"]
    assert answer.returncode == 0 and answer.stderr == ""
    assert answer.stdout.strip() == "the log is empty"


def test_an_error_that_is_not_agentlakes_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: cli.Context, args: argparse.Namespace) -> int:
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(cli, "cmd_log_ls", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["log", "ls"])


def test_a_failure_of_agentlake_exits_1_and_a_user_error_2() -> None:
    from agentlake.context.query import QueryError, SnapshotGone
    from agentlake.errors import StoreUnavailable

    assert cli.exit_status(cli.UsageError("bad")) == 2
    assert cli.exit_status(QueryError("refused")) == 2
    assert cli.exit_status(SnapshotGone("raw.events", 1)) == 1
    assert cli.exit_status(StoreUnavailable("down")) == 1


@pytest.mark.integration
def test_an_unreachable_store_is_answered_in_one_line_by_every_command_that_reads_it(tmp_path: Path) -> None:
    """An S3 endpoint nobody listens on: each command says so in one line, names the store, keeps no secret."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Credentials in the endpoint's URL and a secret with quotes: neither may be printed back.
    env = {"PATH": "/usr/bin:/bin", "AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_STORE": "s3",
           "AGENTLAKE_S3_BUCKET": "lake", "AGENTLAKE_S3_ENDPOINT": f"http://user:CANARY-IN-URL@127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "CANARY-'UNREACHABLE\"",
           "AGENTLAKE_STORE_RETRY_S": "1"}
    key = "log/v1/dt=2026-01-01/hr=00/20260101T000000000000Z-p0123456789ab-000000000000-0000001-0123456789abcdef.ndjson.zst"
    commands = [["log", "ls"], ["log", "cat", key], ["query", "SELECT count(*) FROM raw.events"], ["maintain"],
                ["replay", "r1"], ["publish"], ["ingest"]]

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentlake.cli", *argv], env=env, cwd=tmp_path, text=True,
                              capture_output=True, timeout=180)

    with ThreadPoolExecutor(3) as pool:
        answered = dict(zip((" ".join(c) for c in commands), pool.map(run, commands), strict=True))
    # Ingest logs each retry before it gives up: its last line is the answer, and no line holds a secret.
    ingest = answered.pop("ingest")
    assert ingest.returncode == 1 and "Traceback" not in ingest.stderr, ingest.stderr[-2000:]
    assert ingest.stderr.splitlines()[-1].startswith("agentlake: "), ingest.stderr[-2000:]
    assert "CANARY" not in ingest.stderr + ingest.stdout
    for command, done in answered.items():
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, (command, done.stderr[-2000:])
        assert len(lines) == 1 and "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert lines[0].startswith("agentlake: ") and f"127.0.0.1:{port}" in lines[0], (command, lines)
        assert "CANARY" not in done.stderr + done.stdout, command
