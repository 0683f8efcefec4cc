"""Exactly-once under crashes: ingestion and fact rebuilds killed with SIGKILL, then run again.

One log is prepared per module: demo-fleet segments over two arrival days, ~2% malformed lines,
two segments that repeat other segments' lines (duplicates, within a day and across days), a few
lines that reuse an event_id with other content (conflicts), and runs that start on one day and
finish on the next. A reference ingest of an untouched copy, run once in a worker without any
kill, gives the expected content of every table and the sequence of checkpoint stages.

Each trial copies the log (the whole AGENTLAKE_HOME: the object store folder and the SQLite
catalog), starts ``python -m tests.ingest_worker``, kills it with SIGKILL (from inside, at a
named checkpoint stage, or from here after a random delay), then ingests again in this process
without any kill and checks:

* every arrival day reconciles (lines = rows + quarantined + duplicates, ledgers agree);
* ``raw.events`` holds no event_id twice;
* every table's full content (ingest_run_id aside) equals the reference ingest's, row for row;
* every table's ledger holds every segment, with the reference's counters;
* every table is readable through ``agentlake.context.query.query`` (DuckDB's Iceberg reader).

Before the re-run, each table must hold each day's segments wholly or not at all, with exactly
the reference's rows for that day or none (a commit is data plus ledger, atomically). The
named-stage trials also check *which* tables hold a day: exactly those committed before the
stage. The tests count the trials that were really killed before finishing and that left the
lake half done, so that a worker that never gets killed cannot pass for a robust one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentlake.config import Settings
from agentlake.context.query import query
from agentlake.errors import InvalidEvent
from agentlake.log.events import parse_event_line
from agentlake.log.segments import SegmentInfo
from agentlake.log.writer import LogWriter
from agentlake.pipeline.facts import rebuild_facts
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.pipeline.reconcile import reconcile
from agentlake.pipeline.stage import IngestOptions
from agentlake.sources.demo import FleetConfig, generate_runs
from agentlake.storage.store import ObjectStore
from agentlake.tables.files import day_bounds
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import DayLedger, read_ledger
from agentlake.tables.schemas import ALL_TABLES, EVENTS, FACT_TABLES, QUARANTINE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAYS = ("2026-03-01", "2026-03-02")
TABLES = tuple(t.name for t in ALL_TABLES)
SHORT = {name: name.split(".")[-1] for name in TABLES}  # the names the checkpoint stages use
LANES = 2  # trials run two at a time: each is mostly waiting on a subprocess or on I/O
RANDOM_INGEST_TRIALS = 40
RANDOM_REBUILD_TRIALS = 12
KILLED = -signal.SIGKILL


# --- the prepared log ---------------------------------------------------------------------------


def _valid(line: bytes) -> bool:
    try:
        parse_event_line(line)
    except InvalidEvent:
        return False
    return True


def _altered(line: bytes) -> bytes:
    """The same event_id with other content: ingestion keeps the first and quarantines this one."""
    event = orjson.loads(line)
    event["tenant"] = "someone-else"
    return orjson.dumps(event)


@dataclass(frozen=True)
class LogFacts:
    """What ingesting the prepared log must give, counted from the lines themselves."""

    lines: int
    rows: int  # distinct valid events
    duplicates: int  # valid lines repeated verbatim
    conflicts: int  # valid lines reusing an event_id with other content
    quarantined: int  # invalid lines, repeats included, and the conflicts


def build_log(home: Path) -> LogFacts:
    """Write the test log under ``home``'s store folder."""
    store = ObjectStore.local(home / "store")
    now = [datetime(2026, 3, 1, 22, 0, tzinfo=UTC)]

    def clock() -> datetime:  # each segment arrives 7 s after the previous one
        now[0] += timedelta(seconds=7)
        return now[0]

    lines = list(generate_runs(FleetConfig(seed=11, bad_share=0.02), 90, now[0]))
    conflicting = [_altered(line) for line in lines[300:340] if _valid(line)][:4]
    cut = len(lines) * 2 // 3  # the runs around the cut start on day one and finish on day two
    repeats = lines[200:500] + lines[cut - 150 : cut + 100]
    fleet = LogWriter(store, "fleet", max_segment_events=400, background_flush=False, clock=clock)
    retry = LogWriter(store, "retry", max_segment_events=10_000, background_flush=False, clock=clock)
    with fleet, retry:
        for line in lines[:cut]:
            fleet.append_line(line)
        fleet.flush()
        for line in lines[200:500] + conflicting[:2]:  # repeats of day one, within day one
            retry.append_line(line)
        retry.flush()
        now[0] = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
        for line in lines[cut:]:
            fleet.append_line(line)
        fleet.flush()
        for line in lines[cut - 150 : cut + 100] + conflicting[2:]:  # repeats across the two days
            retry.append_line(line)
        retry.flush()
    sealed = fleet.stats.sealed + retry.stats.sealed
    assert sorted({seg.dt for seg in sealed}) == list(DAYS)
    valid, valid_repeats = sum(map(_valid, lines)), sum(map(_valid, repeats))
    return LogFacts(
        lines=sum(seg.lines for seg in sealed), rows=valid, duplicates=valid_repeats, conflicts=len(conflicting),
        quarantined=len(lines) - valid + len(repeats) - valid_repeats + len(conflicting),
    )


# --- workers ------------------------------------------------------------------------------------


def _default_signals() -> None:
    # Some shells start processes with SIGINT/SIGTERM ignored; the worker must be killable normally.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class Outcome:
    """How one worker process ended."""

    returncode: int
    finished: bool  # it wrote its done marker
    stages: list[str]  # the checkpoint stages it reached, in order
    times: list[float]  # seconds after "ready" at which it reached them
    seconds: float  # from "ready" to its exit
    stderr: str

    @property
    def killed_early(self) -> bool:
        return self.returncode == KILLED and not self.finished

    @property
    def last_stage(self) -> str:
        return self.stages[-1] if self.stages else "(no checkpoint yet)"


def _reached(proc: subprocess.Popen[bytes], progress: Path, stage: str) -> float | None:
    """When the worker reported ``stage`` (watched from here), or None if it ended first."""
    while proc.poll() is None:
        if progress.exists() and f" {stage}\n" in progress.read_text():
            return time.monotonic()
        time.sleep(0.005)
    return None


class Workers:
    """Starts ``python -m tests.ingest_worker`` from the project root."""

    def __init__(self, pycache: Path) -> None:
        # Keep compiled bytecode across the many short-lived workers (in a scratch folder, not
        # in the venv): without it every worker compiles pyiceberg, polars and SQLAlchemy again.
        self.env = {k: v for k, v in os.environ.items()
                    if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith(("AGENTLAKE_", "AWS_"))}
        self.env["PYTHONPYCACHEPREFIX"] = str(pycache)

    def run(
        self,
        action: str,
        home: Path,
        trial: Path,
        *,
        days: Iterable[str] = (),
        kill_at: tuple[str, int] | None = None,
        kill_after: float | None = None,
        kill_from: str | None = None,
    ) -> Outcome:
        """Run one worker to its end: finished, or killed.

        Args:
            kill_at: (stage, n): the worker kills itself the n-th time it reaches that checkpoint.
            kill_after: SIGKILL it this many seconds after it is ready, or after ``kill_from``.
            kill_from: count ``kill_after`` from the moment it reports this checkpoint stage.
        """
        trial.mkdir(parents=True, exist_ok=True)
        progress, done, stderr = trial / "progress", trial / "done", trial / "stderr"
        cmd = [sys.executable, "-m", "tests.ingest_worker", action, "--home", str(home),
               "--progress", str(progress), "--done", str(done)]
        for day in days:
            cmd += ["--day", day]
        if kill_at is not None:
            cmd += ["--kill-at", kill_at[0], "--occurrence", str(kill_at[1])]
        env = {**self.env, "AGENTLAKE_HOME": str(home)}
        with stderr.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                                    preexec_fn=_default_signals)
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                ready = time.monotonic()
                if line.strip() != b"ready":
                    proc.wait(timeout=60)
                    raise AssertionError(f"worker did not start: {stderr.read_text(errors='replace')[-3000:]}")
                start = ready if kill_from is None else _reached(proc, progress, kill_from)
                if kill_after is not None and start is not None:
                    try:
                        proc.wait(timeout=max(0.0, start + kill_after - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                returncode = proc.wait(timeout=300)
                seconds = time.monotonic() - ready
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        stages, times = [], []
        if progress.exists():
            for entry in progress.read_text().splitlines():
                at, _, stage = entry.partition(" ")
                times.append(float(at))
                stages.append(stage)
        outcome = Outcome(returncode, done.exists(), stages, times, seconds, stderr.read_text(errors="replace"))
        if returncode not in (0, KILLED):
            raise AssertionError(f"worker failed with exit code {returncode}:\n{outcome.stderr[-3000:]}")
        return outcome


# --- reading the lake ---------------------------------------------------------------------------


def open_lake(home: Path) -> Lake:
    return Lake(Settings(home=home))


def close_lake(lake: Lake) -> None:
    if "catalog" in lake.__dict__:
        lake.catalog.engine.dispose()


def table_rows(lake: Lake) -> dict[str, list[str]]:
    """Every row of every table, ingest_run_id left out, each as a repr, sorted."""
    out = {}
    for tdef in ALL_TABLES:
        table = lake.table(tdef.name)
        data = table.scan().to_arrow() if table.current_snapshot() is not None else tdef.arrow_schema().empty_table()
        data = data.drop_columns(["ingest_run_id"])
        out[tdef.name] = sorted(repr(tuple(row.values())) for row in data.to_pylist())
    return out


def day_counts(lake: Lake) -> dict[tuple[str, str], int]:
    """Rows per (table, arrival day)."""
    out = {}
    for tdef in ALL_TABLES:
        table = lake.table(tdef.name)
        for day in DAYS:
            empty = table.current_snapshot() is None
            out[tdef.name, day] = 0 if empty else table.scan(row_filter=day_bounds(day)).count()
    return out


def ledgers(lake: Lake) -> dict[tuple[str, str], DayLedger]:
    out = {}
    for tdef in ALL_TABLES:
        properties = lake.table(tdef.name).properties
        for day in DAYS:
            out[tdef.name, day] = read_ledger(properties, day)
    return out


def ledger_facts(ledger: DayLedger, table: str) -> dict[str, Any]:
    """What a table's ledger must say after any history of crashes and re-runs.

    raw.quarantine's rows and duplicates counters are left out: nothing reads them, and a re-run
    that commits raw.quarantine alone records every row of its segments there as a duplicate.
    """
    facts = {"producers": ledger.producers, "segments": ledger.segments, "lines": ledger.lines}
    if table == EVENTS.name:
        facts.update(rows=ledger.rows, quarantined=ledger.quarantined, duplicates=ledger.duplicates)
    if table == QUARANTINE.name:
        facts.update(quarantined=ledger.quarantined)
    return facts


def holdings(lake: Lake, segments: dict[str, list[SegmentInfo]]) -> dict[tuple[str, str], str]:
    """Whether each table holds each day's segments: "all", "none" or (never allowed) "some"."""
    out = {}
    for (name, day), ledger in ledgers(lake).items():
        held = [ledger.holds(seg) for seg in segments[day]]
        out[name, day] = "all" if all(held) else "none" if not any(held) else "some"
    return out


# --- the reference ------------------------------------------------------------------------------


@dataclass
class Reference:
    """The log, and what an ingest without any kill made of it."""

    log_home: Path  # AGENTLAKE_HOME holding only the log: copy it for each trial
    home: Path  # the reference lake, ingested; Iceberg metadata holds its absolute paths
    saved: Path  # a copy of it, to put back in place of ``home``
    log: LogFacts
    segments: dict[str, list[SegmentInfo]]
    rows: dict[str, list[str]]
    counts: dict[tuple[str, str], int]
    ledgers: dict[tuple[str, str], dict[str, Any]]
    stages: list[str]  # the checkpoint stages of a full ingest, in order
    times: list[float]
    seconds: float  # ready -> exit of the reference worker
    workers: Workers
    report: dict[str, Any] = field(default_factory=dict)  # the reference worker's IngestReport
    balanced: list[bool] = field(default_factory=list)  # per day

    @property
    def per_day(self) -> int:
        return len(self.stages) // len(DAYS)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    base = tmp_path_factory.mktemp("kill")
    log_home = base / "log" / "home"
    log = build_log(log_home)
    workers = Workers(base / "pycache")
    home = base / "reference" / "home"
    shutil.copytree(log_home, home)
    outcome = workers.run("ingest", home, base / "reference")
    assert outcome.returncode == 0 and outcome.finished, outcome.stderr
    lake = open_lake(home)
    try:
        segments = {day: lake.log.list_day(day) for day in DAYS}
        reference = Reference(
            log_home=log_home, home=home, saved=base / "reference" / "saved", log=log, segments=segments,
            rows=table_rows(lake), counts=day_counts(lake),
            ledgers={k: ledger_facts(v, k[0]) for k, v in ledgers(lake).items()},
            stages=outcome.stages, times=outcome.times, seconds=outcome.seconds, workers=workers,
            report=orjson.loads((base / "reference" / "done").read_bytes()),
            balanced=[day.balanced for day in reconcile(lake)],
        )
    finally:
        close_lake(lake)
    shutil.copytree(home, reference.saved)
    return reference


# --- checks -------------------------------------------------------------------------------------


def _diff(name: str, got: list[str], want: list[str]) -> str:
    extra, missing = Counter(got) - Counter(want), Counter(want) - Counter(got)
    sample = [f"  + {row[:300]}" for row in list(extra.elements())[:3]]
    sample += [f"  - {row[:300]}" for row in list(missing.elements())[:3]]
    return (f"{name}: {len(got)} rows, reference {len(want)}; {sum(extra.values())} extra, "
            f"{sum(missing.values())} missing\n" + "\n".join(sample))


def check_like_reference(lake: Lake, ref: Reference) -> None:
    """Everything the re-run must leave, compared with the reference ingest."""
    days = reconcile(lake)
    assert [d.day for d in days] == list(DAYS)
    unbalanced = [d.as_dict() for d in days if not d.balanced]
    assert not unbalanced, f"reconciliation is off: {unbalanced}"

    rows = table_rows(lake)
    diffs = [_diff(name, rows[name], ref.rows[name]) for name in TABLES if rows[name] != ref.rows[name]]
    assert not diffs, "tables differ from the reference ingest:\n" + "\n".join(diffs)

    state = {k: ledger_facts(v, k[0]) for k, v in ledgers(lake).items()}
    wrong = {f"{t} {d}": (state[t, d], ref.ledgers[t, d]) for t, d in state if state[t, d] != ref.ledgers[t, d]}
    assert not wrong, f"ledgers differ from the reference (got, want): {wrong}"

    union = " UNION ALL ".join(
        f"SELECT '{name}' AS t, count(*) AS n, NULL AS ids FROM {name}" for name in TABLES if name != EVENTS.name
    )
    seen = query(lake, f"SELECT 'raw.events' AS t, count(*) AS n, count(DISTINCT event_id) AS ids "
                       f"FROM raw.events UNION ALL {union}").to_pylist()
    by_table = {r["t"]: r for r in seen}
    assert by_table[EVENTS.name]["ids"] == by_table[EVENTS.name]["n"], "raw.events holds an event_id twice"
    assert {t: r["n"] for t, r in by_table.items()} == {name: len(ref.rows[name]) for name in TABLES}


def check_whole_or_nothing(lake: Lake, ref: Reference) -> dict[tuple[str, str], str]:
    """Before the re-run: each table holds each day wholly (with the reference's rows) or not at all."""
    held = holdings(lake, ref.segments)
    assert "some" not in held.values(), f"a table holds part of a day's segments: {held}"
    counts = day_counts(lake)
    want = {k: ref.counts[k] if held[k] == "all" else 0 for k in held}
    assert counts == want, f"rows per (table, day) do not match what the ledgers say: {counts} vs {want}"
    return held


def expected_holdings(ref: Reference, position: int) -> dict[tuple[str, str], str]:
    """Which (table, day) a full ingest has committed when its checkpoint call ``position`` is reached."""
    day_index = position // ref.per_day
    done_today = {
        stage.split(":", 1)[1] for stage in ref.stages[day_index * ref.per_day : position + 1]
        if stage.startswith("after-commit:")
    }
    return {
        (name, day): "all" if i < day_index or (i == day_index and SHORT[name] in done_today) else "none"
        for name in TABLES for i, day in enumerate(DAYS)
    }


@contextmanager
def explained(outcome: Outcome) -> Iterator[None]:
    """Prefix a failed check with where the worker was killed."""
    try:
        yield
    except AssertionError as exc:
        where = f"killed after {outcome.last_stage}" if outcome.killed_early else "the worker finished"
        raise AssertionError(f"{where}: {exc}") from exc


def run_lanes(trials: list[Any], one: Callable[[int, Any], Any]) -> list[tuple[Any, Any]]:
    """Run trials ``LANES`` at a time: lane k runs trials k, k + LANES, ... in turn, calling ``one(k, trial)``.

    Returns (trial, its result or the exception it raised), so that one report lists every failure.
    """

    def lane(k: int) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        for trial in trials[k::LANES]:
            try:
                out.append((trial, one(k, trial)))
            except Exception as exc:
                out.append((trial, exc))
        return out

    with ThreadPoolExecutor(max_workers=LANES) as pool:
        return [result for part in pool.map(lane, range(LANES)) for result in part]


def raise_failures(results: list[tuple[Any, Any]]) -> None:
    failures = [(trial, exc) for trial, exc in results if isinstance(exc, BaseException)]
    if failures:
        lines = [f"{len(failures)} of {len(results)} trials failed:"]
        for trial, exc in failures:
            lines.append(f"--- {trial}: {type(exc).__name__}: {str(exc)[:1500]}")
        pytest.fail("\n".join(lines), pytrace=False)


# --- tests --------------------------------------------------------------------------------------


def test_reference_ingest_exercises_every_path(ref: Reference) -> None:
    """The log is worth killing over, and the reference ingest accounts for every line of it.

    Both days, verbatim repeats within a day and across days, conflicting repeats, malformed
    lines, and rows in every fact table.
    """
    log = ref.log
    assert 1_500 <= log.lines <= 3_000 and log.duplicates > 300 and log.conflicts == 4
    assert all(ref.counts[name, day] > 0 for name in TABLES for day in DAYS if name != "facts.feedback")
    # One checkpoint sequence per day: the raw tables' stage, then the facts stage.
    commits = {f"{when}-commit:{SHORT[name]}" for name in TABLES for when in ("before", "after")}
    assert set(ref.stages) == {"after-data-files"} | commits
    assert len(ref.stages) == len(DAYS) * (2 + 2 * len(TABLES))  # after-data-files twice a day, 8 commits a day
    assert ref.stages[: ref.per_day] == ref.stages[ref.per_day :]
    assert ref.balanced == [True] * len(DAYS)
    got = {k: ref.report[k] for k in ("lines", "rows", "duplicates", "conflicts", "quarantined")}
    want = {k: getattr(log, k) for k in got}
    assert got == want, f"the ingest report {got} does not match the counts taken from the log's lines {want}"


def test_kill_at_every_checkpoint_then_rerun(ref: Reference, tmp_path: Path) -> None:
    """SIGKILL at each checkpoint of a day's ingest (on day one or day two, alternately), then ingest again."""
    plan = []
    for position, stage in enumerate(ref.stages):
        if (position % ref.per_day) % len(DAYS) == position // ref.per_day:
            plan.append((position, stage, ref.stages[: position + 1].count(stage)))
    assert sorted(p % ref.per_day for p, _, _ in plan) == list(range(ref.per_day))  # each checkpoint of a day, once

    def trial(_lane: int, step: tuple[int, str, int]) -> dict[tuple[str, str], str]:
        position, stage, occurrence = step
        where = tmp_path / f"stage-{position:02d}"
        home = where / "home"
        shutil.copytree(ref.log_home, home)
        outcome = ref.workers.run("ingest", home, where, kill_at=(stage, occurrence))
        assert outcome.killed_early, f"the worker was not killed at {stage}: {outcome}"
        assert outcome.stages == ref.stages[: position + 1], "the worker took another path than the reference"
        lake = open_lake(home)
        try:
            held = check_whole_or_nothing(lake, ref)
            assert held == expected_holdings(ref, position)
            ingest_pending_then_facts(lake, IngestOptions(run_id=f"rerun-{position}"))
            check_like_reference(lake, ref)
        finally:
            close_lake(lake)
        return held

    results = run_lanes(plan, trial)
    raise_failures(results)
    # Every kill but one after the very last commit leaves some table without a day's segments.
    left_behind = [step for step, held in results if "none" in held.values()]
    assert len(left_behind) == len([p for p, _, _ in plan if p < len(ref.stages) - 1]) > 0


def test_random_kills_during_ingest_then_rerun(ref: Reference, tmp_path: Path) -> None:
    """SIGKILL from outside at a random moment of the ingest, then ingest again.

    Half the kills come 0 to T seconds after the worker is ready (T: the reference ingest's
    duration); half come 0 to T' seconds after its first checkpoint, as seen from here (T': the
    reference's time from there to its last commit), so that they land among the commits even
    when this machine is slower than it was for the reference.
    """
    first = ref.times[ref.stages.index("after-data-files")]
    rng = random.Random(20261126)
    plan = [(i, rng.uniform(0.0, ref.seconds), None) if i % 2 == 0
            else (i, rng.uniform(0.0, ref.times[-1] - first), "after-data-files") for i in range(RANDOM_INGEST_TRIALS)]

    def trial(_lane: int, step: tuple[int, float, str | None]) -> tuple[Outcome, dict[tuple[str, str], str]]:
        index, delay, kill_from = step
        where = tmp_path / f"random-{index:02d}"
        home = where / "home"
        shutil.copytree(ref.log_home, home)
        outcome = ref.workers.run("ingest", home, where, kill_after=delay, kill_from=kill_from)
        lake = open_lake(home)
        try:
            with explained(outcome):
                held = check_whole_or_nothing(lake, ref)
                ingest_pending_then_facts(lake, IngestOptions(run_id=f"rerun-{index}"))
                check_like_reference(lake, ref)
        finally:
            close_lake(lake)
        return outcome, held

    results = run_lanes(plan, trial)
    raise_failures(results)
    killed = [(o, h) for _, (o, h) in results if o.killed_early]
    half_done = [(o, h) for o, h in killed if "all" in h.values() and "none" in h.values()]
    where_killed = Counter(o.last_stage for o, _ in killed)
    print(f"\nrandom ingest kills: {len(killed)}/{len(results)} before the end, {len(half_done)} left the "
          f"lake half done; last stage reached: {dict(where_killed)}")
    assert len(killed) >= RANDOM_INGEST_TRIALS // 4, "too few trials were killed before the ingest finished"
    assert len(half_done) >= 3, "too few kills landed between two commits"


@pytest.mark.filterwarnings("ignore:Delete operation did not match any records")  # a day without feedback
def test_random_kills_during_rebuild_facts_then_rerun(ref: Reference, tmp_path: Path) -> None:
    """SIGKILL at a random moment of rebuild_facts over both days, then rebuild again."""
    # Iceberg metadata holds absolute paths: an ingested lake is put back in the same folder each
    # time. Lane 0 is the reference lake itself; the other lanes ingest their own.
    lanes = [(ref.home, ref.saved)]
    for lane in range(1, LANES):
        home = tmp_path / f"lane-{lane}" / "home"
        shutil.copytree(ref.log_home, home)
        lake = open_lake(home)
        try:
            ingest_pending_then_facts(lake, IngestOptions(run_id=f"lane-{lane}"))
        finally:
            close_lake(lake)
        saved = tmp_path / f"lane-{lane}" / "saved"
        shutil.copytree(home, saved)
        lanes.append((home, saved))

    def restore(lane: int) -> Path:
        home, saved = lanes[lane]
        shutil.rmtree(home)
        shutil.copytree(saved, home)
        return home

    # A rebuild without a kill first: it must reproduce the incremental facts exactly, and it gives T.
    control = ref.workers.run("rebuild", restore(0), tmp_path / "control", days=DAYS)
    assert control.finished
    lake = open_lake(lanes[0][0])
    try:
        check_like_reference(lake, ref)
    finally:
        close_lake(lake)
    rebuild_commits = sum(1 for stage in control.stages if stage.startswith("after-commit:"))
    assert rebuild_commits == len(FACT_TABLES) * len(DAYS)

    # Half the kills at any moment of the rebuild; half at a moment of its commits, counted from its
    # first checkpoint as seen from here, so that a run slower than the control still gets there.
    first = control.times[control.stages.index("after-data-files")]
    commit_phase = max(t for stage, t in zip(control.stages, control.times, strict=True)
                       if stage.startswith("after-commit:")) - first
    rng = random.Random(7)
    plan = [(i, rng.uniform(0.0, control.seconds), None) if i % 2 == 0
            else (i, rng.uniform(0.0, commit_phase), "after-data-files") for i in range(RANDOM_REBUILD_TRIALS)]

    def trial(lane: int, step: tuple[int, float, str | None]) -> tuple[Outcome, int]:
        index, delay, kill_from = step
        home = restore(lane)
        outcome = ref.workers.run("rebuild", home, tmp_path / f"rebuild-{index:02d}", days=DAYS,
                                  kill_after=delay, kill_from=kill_from)
        lake = open_lake(home)
        try:
            with explained(outcome):
                check_whole_or_nothing(lake, ref)
                rebuilt = sum(  # rebuild commits that made it (each a delete and an append, in one transaction)
                    1 for tdef in FACT_TABLES for snap in lake.table(tdef.name).snapshots()
                    if snap.summary is not None and snap.summary.operation.value == "append"
                    and "agentlake.rebuild" in snap.summary.additional_properties
                )
                for day in DAYS:
                    rebuild_facts(lake, day, IngestOptions(run_id=f"rerun-{index}"))
                ingest_pending_then_facts(lake, IngestOptions(run_id=f"rerun-{index}"))
                check_like_reference(lake, ref)
        finally:
            close_lake(lake)
        return outcome, rebuilt

    results = run_lanes(plan, trial)  # a lane restores and uses only its own folder
    raise_failures(results)
    killed = [(o, n) for _, (o, n) in results if o.killed_early]
    part_rebuilt = [n for o, n in killed if 0 < n < rebuild_commits]
    print(f"\nrandom rebuild kills: {len(killed)}/{len(results)} before the end, {len(part_rebuilt)} with some "
          f"fact tables rebuilt and others not; last stage: {dict(Counter(o.last_stage for o, _ in killed))}")
    assert len(killed) >= RANDOM_REBUILD_TRIALS // 4
    assert part_rebuilt, "no kill landed between two rebuild commits"


def test_an_identical_repeat_in_a_later_batch_is_a_duplicate_not_a_conflict(tmp_path: Path) -> None:
    """A line repeated verbatim in a segment ingested later is a duplicate, like a repeat within one batch.

    The re-run after a kill between the raw.events and raw.quarantine commits reads its segments
    again while raw.events already holds their rows: this is that case in its smallest form.
    """
    lake = open_lake(tmp_path / "home")
    writer = LogWriter(lake.store, "solo", background_flush=False)
    line = orjson.dumps({"event_id": "e-1", "run_id": "r-1", "agent_id": "a", "type": "llm_call",
                         "ts": "2026-03-01T10:00:00Z", "gen_ai.usage.input_tokens": 12})
    try:
        writer.append_line(line)
        writer.flush()
        first = ingest_pending_then_facts(lake, IngestOptions(run_id="first"))
        writer.append_line(line)
        writer.flush()
        second = ingest_pending_then_facts(lake, IngestOptions(run_id="second"))
        assert (first.rows, second.rows) == (1, 0)
        assert (second.duplicates, second.conflicts, second.quarantined) == (1, 0, 0), second.as_dict()
        assert all(day.balanced for day in reconcile(lake))
    finally:
        writer.close()
        close_lake(lake)
