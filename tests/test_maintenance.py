"""Table maintenance: compaction and snapshot expiry change no result, keep every pinned snapshot,
survive concurrent commits, and keep exactly-once after a re-run of old days; the Dagster assets
run in their own lane and report what they did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pyarrow as pa
import pytest
from dagster import DagsterInstance, Definitions, materialize
from pyiceberg.exceptions import CommitFailedException

from agentlake import cli
from agentlake.config import Settings
from agentlake.context import pins
from agentlake.context.index import CONTEXT_ARTIFACTS
from agentlake.context.query import SnapshotGone, connect, query, resolve
from agentlake.errors import ConfigError
from agentlake.log.segments import SegmentInfo
from agentlake.log.writer import LogWriter
from agentlake.maintenance.maintain import (
    CompactionPolicy,
    RetentionPolicy,
    _AssertSafeToExpire,
    compact,
    expire,
    footprint,
    maintain,
    maintained_tables,
    trash_prefix,
)
from agentlake.pipeline.facts import rebuild_facts
from agentlake.pipeline.flow import ingest_pending_then_facts, ingest_then_facts
from agentlake.pipeline.ingest import ingest
from agentlake.pipeline.reconcile import reconcile
from agentlake.pipeline.stage import IngestOptions
from agentlake.tables.files import file_day, live_files, referenced_files
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import LEDGER_PREFIX
from agentlake.tables.schemas import ALL_TABLES, EVENTS, QUARANTINE, ensure_tables
from assets.context import CONTEXT_ARTIFACTS_KEY
from assets.ingest import INGEST_LANE_TAG, table_key
from assets.maintenance import (
    MAINTENANCE_LANE,
    OTHER_MAINTENANCE,
    RAW_MAINTENANCE,
    build_maintenance_assets,
)
from platform_defs.environment import instance_yaml
from platform_defs.jobs import maintenance_job, maintenance_schedule
from platform_defs.resources import LakeResource
from tests.corpus import demo_lines

DAY1 = datetime(2025, 3, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
QUERIES = (
    "SELECT * FROM raw.events ORDER BY event_id",
    "SELECT * FROM raw.quarantine ORDER BY segment_key, line_offset",
    "SELECT * FROM facts.agent_runs ORDER BY run_id",
    "SELECT * FROM facts.llm_calls ORDER BY event_id",
    "SELECT document_id, document_rank, event_id FROM facts.retrievals ORDER BY event_id, document_rank",
    "SELECT agent_id, count(*) AS n, sum(input_tokens) AS tokens FROM facts.llm_calls GROUP BY 1 ORDER BY 1",
)


class Producer:
    """Writes small demo segments, one with a truncated line every few, at chosen arrival times."""

    def __init__(self, lake: Lake) -> None:
        self.at = DAY1
        self.writer = LogWriter(lake.store, "maint", background_flush=False, clock=lambda: self.at)
        self.seed = 0

    def segment(self, at: datetime, runs: int = 2) -> SegmentInfo:
        self.at = at
        self.seed += 1
        for i, line in enumerate(demo_lines(self.seed, runs, at)):
            self.writer.append_line(line[:-3] if i == 5 else line)
        seg = self.writer.flush()
        assert seg is not None
        return seg


def build_lake(tmp_path: Path, per_day: int = 5, facts: bool = True) -> tuple[Lake, Producer]:
    """A lake with ``per_day`` ingest commits on each of two arrival days: many small files."""
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home")}))
    producer = Producer(lake)
    for day in (DAY1, DAY2):
        for n in range(per_day):
            seg = producer.segment(day + timedelta(hours=1, minutes=n))
            (ingest_then_facts if facts else ingest)(lake, [seg], IngestOptions(run_id=f"r-{day.day}-{n}"))
    return lake, producer


def results(lake: Lake) -> list[pa.Table]:
    """Each query's result through DuckDB's Iceberg reader (one connection, pinned to the current snapshots)."""
    con, _pins = connect(lake)
    try:
        return [con.execute(sql).fetch_arrow_table() for sql in QUERIES]
    finally:
        con.close()


def ledgers(lake: Lake) -> dict[str, dict[str, str]]:
    return {t.name: {k: v for k, v in lake.table(t.name).properties.items() if k.startswith(LEDGER_PREFIX)}
            for t in ALL_TABLES}


def balanced_counts(lake: Lake) -> list[tuple[Any, ...]]:
    out = []
    for r in reconcile(lake):
        assert r.balanced, r.as_dict()
        out.append((r.day, r.lines_in_log, r.rows, r.quarantined, r.duplicates))
    return out


def tag(lake: Lake, table_name: str, snapshot_id: int, max_ref_age_ms: int | None, name: str) -> str:
    """A tag named ``name`` on a snapshot."""
    table = lake.table(table_name)
    table.manage_snapshots().create_tag(snapshot_id, name, max_ref_age_ms=max_ref_age_ms).commit()
    return name


@pytest.mark.integration
def test_maintenance_changes_no_result_keeps_pins_and_exactly_once(tmp_path: Path) -> None:
    lake, _producer = build_lake(tmp_path, per_day=3)
    events = lake.table(EVENTS.name)
    history = [s.snapshot_id for s in events.metadata.snapshots]
    assert len(history) == 6 and footprint(events).data_files == 6
    # Pins in force on two early snapshots, a plain tag with no age, and a branch.
    first, early, tagged = history[0], history[1], history[3]
    rows_at = {sid: events.scan(snapshot_id=sid).to_arrow().num_rows for sid in (first, early)}
    now = datetime.now(UTC)
    for sid in (first, early):
        pins.pin_snapshots(lake, {EVENTS.name: sid}, created_ms=int(now.timestamp() * 1000),
                           retention=pins.retention_ms(400))
    tag(lake, EVENTS.name, tagged, max_ref_age_ms=None, name="audit-2025")
    lake.table(EVENTS.name).manage_snapshots().create_branch(history[4], "staging").commit()
    before, counts, held = results(lake), balanced_counts(lake), ledgers(lake)

    # Maintenance with a retention that keeps only the current snapshot (and those refs hold).
    reports = maintain(lake, now=now + timedelta(hours=1), retention=RetentionPolicy(keep_hours=0.5, keep_last=1),
                       compaction=CompactionPolicy(min_files=2))
    by_table = {r.table: r for r in reports}
    ev = by_table[EVENTS.name]
    assert (ev.compaction.files_rewritten, ev.compaction.files_written, ev.compaction.partitions_compacted) == (6, 2, 2)
    assert ev.before.data_files == 6 and ev.after.data_files == 2 and ev.after.rows == ev.before.rows
    # Files only expired snapshots used are kept for the pin retention.
    assert ev.expiry.files_deferred > 0 and ev.expiry.bytes_deferred > 0 and ev.expiry.files_deleted == 0
    assert lake.store.list(trash_prefix(EVENTS.name))
    for tdef in ALL_TABLES:  # every table was compacted and expired
        r = by_table[tdef.name]
        assert r.compaction.files_rewritten >= 2 and r.after.data_files == 2, tdef.name
        assert r.expiry.snapshots_expired > 0, tdef.name

    events = lake.table(EVENTS.name)
    left = {s.snapshot_id for s in events.metadata.snapshots}
    current = events.current_snapshot()
    assert current is not None
    assert left == {current.snapshot_id, tagged, history[4]}  # head, tag, branch head: no pinned snapshot
    assert set(events.metadata.refs) == {"main", "audit-2025", "staging"}
    # The pinned snapshots still read as they were, through their pin records, though they left
    # the table's metadata and their files were compacted away from main.
    assert pins.pin_in_force(lake, EVENTS.name, first) is not None
    for sid, rows in rows_at.items():
        con, _ = connect(lake, pins={EVENTS.name: sid})
        assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (rows,)
        con.close()

    # Same query results, same reconciliation, same ledgers.
    after = results(lake)
    for sql, old, new in zip(QUERIES, before, after, strict=True):
        assert new.equals(old), sql
    assert balanced_counts(lake) == counts and ledgers(lake) == held

    # A year later: re-ingest and rebuild the old days. Nothing is added twice.
    again = ingest_pending_then_facts(lake, IngestOptions(run_id="year-later"))
    assert again.rows == 0 and again.quarantined == 0 and again.segments == 0
    for day in (DAY1, DAY2):
        rebuild_facts(lake, day.date().isoformat(), IngestOptions(run_id="rebuild"))
    assert balanced_counts(lake) == counts
    for sql, old, new in zip(QUERIES, before, results(lake), strict=True):
        assert new.equals(old), sql

    # Maintenance again: nothing small left to compact, and the pin still holds.
    second = maintain(lake, [EVENTS.name], now=now + timedelta(hours=2),
                      retention=RetentionPolicy(keep_hours=0.5, keep_last=1), compaction=CompactionPolicy(min_files=2))
    assert second[0].compaction.files_rewritten == 0 and second[0].expiry.files_deleted == 0
    con, _ = connect(lake, pins={EVENTS.name: early})
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (rows_at[early],)
    con.close()


@pytest.mark.integration
def test_expiry_policy_keeps_recent_snapshots_and_the_last_few(tmp_path: Path) -> None:
    lake, _ = build_lake(tmp_path, per_day=3, facts=False)
    table = lake.table(EVENTS.name)
    assert len(table.metadata.snapshots) == 6
    now = datetime.now(UTC)
    # All six are younger than the retention: nothing expires.
    report = expire(lake, EVENTS.name, now=now, policy=RetentionPolicy(keep_hours=1, keep_last=1))
    assert (report.snapshots_expired, report.snapshots_kept) == (0, 6)
    # Two hours later they are all older than an hour: only the last two of main are kept.
    report = expire(lake, EVENTS.name, now=now + timedelta(hours=2), policy=RetentionPolicy(keep_hours=1, keep_last=2))
    assert (report.snapshots_expired, report.snapshots_kept) == (4, 2)
    table = lake.table(EVENTS.name)
    head = table.current_snapshot()
    assert head is not None and head.parent_snapshot_id in {s.snapshot_id for s in table.metadata.snapshots}
    assert table.scan().to_arrow().num_rows == sum(r.rows for r in reconcile(lake))
    with pytest.raises(ValueError, match="at least the last snapshot"):
        RetentionPolicy(keep_hours=1, keep_last=0)


@pytest.mark.integration
def test_the_command_line_runs_maintenance_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake, _ = build_lake(tmp_path, per_day=4, facts=False)  # AGENTLAKE_HOME is tmp_path / "home"
    assert cli.main(["maintain", "--table", EVENTS.name, "--json"]) == 0
    (row,) = orjson.loads(capsys.readouterr().out)["tables"]
    assert row["table"] == EVENTS.name and row["files_rewritten"] == 8 and row["data_files_after"] == 2
    assert row["snapshots_expired"] == 0  # all younger than the default retention
    assert cli.main(["maintain", "--table", "raw.nope"]) == 2
    assert "no table raw.nope" in capsys.readouterr().err
    # The context index is maintained too, once it exists.
    assert CONTEXT_ARTIFACTS.name not in maintained_tables(lake)
    ensure_tables(lake.catalog, [CONTEXT_ARTIFACTS])
    assert maintained_tables(lake) == [t.name for t in ALL_TABLES] + [CONTEXT_ARTIFACTS.name]


@pytest.mark.integration
def test_the_one_manifest_walk_finds_what_pyiceberg_scans_and_reads_each_manifest_once(tmp_path: Path) -> None:
    lake, _ = build_lake(tmp_path, per_day=2, facts=False)
    events = lake.table(EVENTS.name)
    live = live_files(events)
    assert {f.file_path for f in live} == {t.file.file_path for t in events.scan().plan_files()} and len(live) == 4
    by_day = {day: live_files(events, partition_day=day) for day in ("2025-03-01", "2025-03-02", "2025-03-03")}
    assert [len(files) for files in by_day.values()] == [2, 2, 0]
    assert all(file_day(f) == day for day, files in by_day.items() for f in files)
    first = events.metadata.snapshots[0]
    assert len(live_files(events, first)) == 1  # an older snapshot: only the files it held

    cache: dict[str, Any] = {}
    referenced = referenced_files(events.io, events.metadata.snapshots, cache)
    manifests = {m.manifest_path for s in events.metadata.snapshots for m in s.manifests(events.io)}
    assert set(cache) == manifests  # each manifest read once, whichever snapshots share it
    assert manifests | {s.manifest_list for s in events.metadata.snapshots} <= set(referenced)
    assert all(referenced[f.file_path] == f.file_size_in_bytes for f in live)
    assert referenced_files(events.io, events.metadata.snapshots, cache) == referenced and set(cache) == manifests


@pytest.mark.integration
def test_a_pin_made_while_expiry_commits_wins(tmp_path: Path) -> None:
    lake, _ = build_lake(tmp_path, per_day=2, facts=False)
    oldest = lake.table(EVENTS.name).metadata.snapshots[0].snapshot_id
    made: list[str] = []

    def pin_meanwhile(stage: str) -> None:
        if stage == "before-commit:expiry" and not made:
            made.append(tag(lake, EVENTS.name, oldest, max_ref_age_ms=None, name="audit-hold"))

    report = expire(lake, EVENTS.name, now=datetime.now(UTC) + timedelta(days=1),
                    policy=RetentionPolicy(keep_hours=0, keep_last=1), checkpoint=pin_meanwhile)
    table = lake.table(EVENTS.name)
    assert report.attempts == 2 and made and made[0] in table.metadata.refs
    assert oldest in {s.snapshot_id for s in table.metadata.snapshots}
    assert report.snapshots_expired == 2  # the other two older snapshots
    # The requirement itself: a snapshot some ref references is never removed.
    with pytest.raises(CommitFailedException, match="references snapshot"):
        _AssertSafeToExpire(snapshot_ids=[oldest]).validate(table.metadata)


@pytest.mark.integration
def test_deferred_deletion_keeps_pinned_files_for_the_retention_and_spares_later_as_of_pins(tmp_path: Path) -> None:
    lake, _ = build_lake(tmp_path, per_day=2, facts=False)
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_PIN_RETENTION_DAYS": "1"}))
    snapshots = lake.table(EVENTS.name).metadata.snapshots
    read, later = snapshots[0], snapshots[1]
    rows = {s.snapshot_id: lake.table(EVENTS.name).scan(snapshot_id=s.snapshot_id).to_arrow().num_rows
            for s in (read, later)}
    created = datetime.now(UTC)
    day = pins.retention_ms(1)
    pins.pin_snapshots(lake, {EVENTS.name: read.snapshot_id}, created_ms=int(created.timestamp() * 1000),
                       retention=day)
    policy = RetentionPolicy(keep_hours=0, keep_last=1)

    def count(snapshot_id: int) -> int:
        con, _ = connect(lake, pins={EVENTS.name: snapshot_id})
        try:
            return int(con.execute("SELECT count(*) FROM raw.events").fetchone()[0])  # type: ignore[index]
        finally:
            con.close()

    # An hour later every snapshot but the head leaves the metadata; their files are only recorded.
    report = expire(lake, EVENTS.name, now=created + timedelta(hours=1), policy=policy)
    assert report.snapshots_expired == 3 and len(lake.table(EVENTS.name).metadata.snapshots) == 1
    assert report.files_deferred > 0 and report.files_deleted == 0
    assert count(read.snapshot_id) == rows[read.snapshot_id]
    # Half a day later an as-of read pins an older snapshot, gone from the table: a historical pin.
    as_of_ms = later.timestamp_ms
    found = resolve(lake, [EVENTS.name], as_of_ms=as_of_ms)
    assert found[0] == {EVENTS.name: later.snapshot_id} and EVENTS.name in found[1]
    pins.pin_snapshots(lake, found[0], created_ms=int((created + timedelta(hours=12)).timestamp() * 1000),
                       retention=day, locations=found[1])
    historical = pins.pin_in_force(lake, EVENTS.name, later.snapshot_id)
    assert historical is not None and historical.historical
    # Not yet due: nothing deleted.
    report = expire(lake, EVENTS.name, now=created + timedelta(hours=20), policy=policy)
    assert report.trash_records_due == 0 and report.files_deleted == 0
    # Past the pin retention (and its hour of rounding): the first pin's files go, the files the
    # later as-of pin reads are spared and recorded again.
    report = expire(lake, EVENTS.name, now=created + timedelta(days=1, hours=2), policy=policy)
    assert report.trash_records_due == 1 and report.files_deleted > 0 and report.files_spared > 0
    spared = report.files_spared
    with pytest.raises(SnapshotGone, match="pin ran out"):
        count(read.snapshot_id)
    assert count(later.snapshot_id) == rows[later.snapshot_id]
    assert len(lake.store.list(trash_prefix(EVENTS.name))) == 1
    # Once that pin has run out too, its files go.
    report = expire(lake, EVENTS.name, now=created + timedelta(days=2, hours=4), policy=policy)
    assert report.trash_records_due == 1 and report.files_deleted == spared
    with pytest.raises(SnapshotGone, match="deleted its files"):
        count(later.snapshot_id)
    assert not lake.store.list(trash_prefix(EVENTS.name))
    # The current snapshot never lost a file.
    assert lake.table(EVENTS.name).scan().to_arrow().num_rows == sum(r.rows for r in reconcile(lake))


@pytest.mark.integration
def test_table_metadata_stays_bounded_with_every_snapshot_pinned(tmp_path: Path) -> None:
    from agentlake.context.assembly import ContextRequest, assemble
    from agentlake.context.replay import REPRODUCIBLE, replay

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home")}))
    producer = Producer(lake)
    policy = RetentionPolicy(keep_hours=0, keep_last=3)
    request = ContextRequest.from_sql("SELECT count(*) AS n, max(event_id) AS last FROM raw.events")
    artifacts, sizes = [], []
    for n in range(12):
        ingest(lake, [producer.segment(DAY1 + timedelta(minutes=n))], IngestOptions(run_id=f"tick-{n}"))
        made = assemble(lake, request, run_id=f"run-{n}", agent_id="bounded")
        artifacts.append(made.artifact.key)
        expire(lake, EVENTS.name, now=datetime.now(UTC) + timedelta(minutes=1), policy=policy)
        table = lake.table(EVENTS.name)
        assert len(table.metadata.snapshots) <= policy.keep_last
        assert set(table.metadata.refs) == {"main"}
        sizes.append(footprint(table).metadata_json_bytes)
    # Each commit adds one metadata-log entry (bounded by Iceberg's previous-versions-max), no snapshot.
    assert sizes[-1] - sizes[3] < 8 * 1024, sizes
    # Every artifact, its snapshot long expired from the table, still replays.
    assert [r.status for key in artifacts for r in replay(lake, key)] == [REPRODUCIBLE] * len(artifacts)


@pytest.mark.integration
def test_compaction_survives_a_concurrent_ingest_and_a_concurrent_rebuild(tmp_path: Path) -> None:
    lake, producer = build_lake(tmp_path, per_day=3, facts=True)
    day = DAY1.date().isoformat()
    late: list[SegmentInfo] = []

    def ingest_meanwhile(stage: str) -> None:
        if stage == "before-commit:compaction" and not late:
            late.append(producer.segment(DAY1 + timedelta(hours=5)))
            ingest(lake, late, IngestOptions(run_id="concurrent"))

    # raw.events: the concurrent commit only added a file; the rewritten files are committed on retry.
    report = compact(lake, EVENTS.name, day, policy=CompactionPolicy(min_files=2), checkpoint=ingest_meanwhile)
    assert report.attempts == 2 and report.files_rewritten == 3 and report.files_written == 1
    events = lake.table(EVENTS.name)
    assert footprint(events).data_files == 2 + 3  # day 1: the compacted file and the concurrent one; day 2
    assert query(lake, "SELECT count(*) - count(DISTINCT event_id) FROM raw.events").column(0)[0].as_py() == 0
    assert query(lake, f"SELECT count(*) FROM raw.events WHERE segment_key = '{late[0].key}'").column(0)[0].as_py() > 0

    # facts.llm_calls: a rebuild replaced the day's files meanwhile; compaction plans again from them.
    llm_sql = "SELECT * FROM facts.llm_calls ORDER BY event_id"
    llm_before = query(lake, llm_sql)
    rebuilt: list[pa.Table] = []

    def rebuild_meanwhile(stage: str) -> None:
        if stage == "before-commit:compaction" and not rebuilt:
            rebuild_facts(lake, day, IngestOptions(run_id="rebuild"))
            rebuilt.append(query(lake, llm_sql))

    report = compact(lake, "facts.llm_calls", day, policy=CompactionPolicy(min_files=1),
                     checkpoint=rebuild_meanwhile)
    assert rebuilt and report.attempts >= 2
    assert rebuilt[0].num_rows > llm_before.num_rows  # the rebuild also took the concurrent segment
    assert query(lake, llm_sql).equals(rebuilt[0])
    assert query(lake, "SELECT count(*) - count(DISTINCT event_id) FROM facts.llm_calls").column(0)[0].as_py() == 0
    for r in reconcile(lake):
        assert r.balanced, r.as_dict()
    # The files the abandoned attempt wrote were deleted: every data file on disk is in some snapshot.
    for name in (EVENTS.name, "facts.llm_calls"):
        table = lake.table(name)
        on_disk = {str(p) for p in Path(urlparse(table.location()).path, "data").rglob("*.parquet")}
        referenced = {f.file_path for snap in table.metadata.snapshots for m in snap.manifests(table.io)
                      for f in (e.data_file for e in m.fetch_manifest_entry(table.io, discard_deleted=False))}
        assert on_disk and on_disk <= {urlparse(p).path for p in referenced}, name


@pytest.mark.unit
def test_retention_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"AGENTLAKE_SNAPSHOT_RETENTION_HOURS": "6", "AGENTLAKE_SNAPSHOTS_KEEP_LAST": "3"})
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(keep_hours=6, keep_last=3)
    assert RetentionPolicy.from_settings(Settings.from_env({})) == RetentionPolicy(keep_hours=0.25, keep_last=10)
    with pytest.raises(ConfigError, match="AGENTLAKE_SNAPSHOTS_KEEP_LAST"):
        Settings.from_env({"AGENTLAKE_SNAPSHOTS_KEEP_LAST": "0"})


# --- Dagster ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_maintenance_has_its_own_lane_with_one_run_at_a_time(tmp_path: Path) -> None:
    assert maintenance_job.tags[INGEST_LANE_TAG] == MAINTENANCE_LANE
    assert maintenance_schedule.job_name == "maintenance" and maintenance_schedule.cron_schedule == "*/10 * * * *"
    assert maintenance_schedule.default_status.value == "RUNNING"
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})))
    instance = DagsterInstance.from_config(str(home))
    try:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": INGEST_LANE_TAG, "value": MAINTENANCE_LANE, "limit": 1} in limits
    finally:
        instance.dispose()


@pytest.mark.integration
def test_maintenance_job_reports_what_it_did_per_table(tmp_path: Path) -> None:
    lake, _ = build_lake(tmp_path, per_day=3, facts=True)
    ensure_tables(lake.catalog, [CONTEXT_ARTIFACTS])  # the context index, as the first assembly makes it
    resource = LakeResource(home=str(tmp_path / "home"))
    settings = Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_SNAPSHOT_RETENTION_HOURS": "0",
                                  "AGENTLAKE_SNAPSHOTS_KEEP_LAST": "1"})
    assets = build_maintenance_assets(settings)
    before = results(lake)
    defs = Definitions(assets=assets, jobs=[maintenance_job], schedules=[maintenance_schedule],
                       resources={"lake": resource})
    instance = DagsterInstance.ephemeral()
    config = {"ops": {name: {"config": {"min_files": 2}} for name in ("maintenance__raw_tables",
                                                                      "maintenance__fact_tables")}}
    result = defs.resolve_job_def("maintenance").execute_in_process(instance=instance, run_config=config)
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[INGEST_LANE_TAG] == MAINTENANCE_LANE
    raw = instance.get_latest_materialization_event(RAW_MAINTENANCE)
    facts = instance.get_latest_materialization_event(OTHER_MAINTENANCE)
    assert raw is not None and facts is not None
    meta = {k: v.value for k, v in raw.asset_materialization.metadata.items()}  # type: ignore[union-attr]
    assert meta["files_rewritten"] == 6 + 6 and meta["data_files_after"] == 2 + 2  # 3 commits x 2 days, 2 tables
    assert meta["snapshots_expired"] == 6 + 6 and meta["bytes_before"] > 0 and meta["bytes_after"] > 0
    rows = {r.data["table"]: r.data for r in meta["tables"].records}
    assert set(rows) == {EVENTS.name, QUARANTINE.name}
    assert rows[EVENTS.name]["files_rewritten"] == 6 and rows[EVENTS.name]["snapshots_kept"] == 1
    fmeta = {k: v.value for k, v in facts.asset_materialization.metadata.items()}  # type: ignore[union-attr]
    assert set(fmeta["per_table"]) == {t.name for t in ALL_TABLES} - {EVENTS.name, QUARANTINE.name} | {CONTEXT_ARTIFACTS.name}
    assert fmeta["snapshots_expired"] > 0
    # Each table's own page shows what maintenance did to it.
    obs = instance.fetch_observations(records_filter=table_key(EVENTS), limit=1).records
    assert obs and obs[0].asset_observation.metadata["maintenance/files_rewritten"].value == 6  # type: ignore[union-attr]
    observed = obs[0].asset_observation.metadata  # type: ignore[union-attr]
    assert observed["dagster/table_name"].value == EVENTS.name
    assert observed["dagster/row_count"].value == lake.table(EVENTS.name).scan().to_arrow().num_rows
    # But the context index's: the newest event of its page stays the index's materialization, where the
    # auditor's walk goes on (its figures are the fact_tables materialization's row above).
    assert instance.fetch_observations(records_filter=table_key(ALL_TABLES[-1]), limit=1).records
    assert not instance.fetch_observations(records_filter=CONTEXT_ARTIFACTS_KEY, limit=1).records
    for sql, old, new in zip(QUERIES, before, results(lake), strict=True):
        assert new.equals(old), sql

    # A manual materialization of one asset (no config) uses the deployment's retention.
    again = materialize([assets[0]], resources={"lake": resource}, instance=instance)
    assert again.success



@pytest.mark.integration
def test_a_forged_trash_record_deletes_nothing_that_is_not_provably_garbage(tmp_path: Path) -> None:
    """Anyone with write access to the store can write a trash record: its word deletes nothing."""
    import orjson

    from agentlake.maintenance.maintain import empty_trash
    from agentlake.tables.files import live_files

    lake, _ = build_lake(tmp_path, per_day=2, facts=False)
    events = lake.table(EVENTS.name)
    location = events.location().rstrip("/")
    root = lake.settings.store_root
    segment = lake.log.list_all()[0]
    outside = tmp_path / "outside.txt"
    outside.write_text("not the lake's")
    live = live_files(events, data_only=True)[0].file_path
    current_metadata = events.metadata_location
    garbage = f"{location}/data/forged-garbage.parquet"
    Path(garbage.removeprefix("file://")).write_bytes(b"PAR1 unreferenced PAR1")
    named = {
        (root / segment.key).resolve().as_uri(): 1,  # a log segment
        outside.resolve().as_uri(): 1,  # a file outside the store
        f"{location}/data/../../../../../{outside.name}": 1,  # climbing out of the table
        live: 1,  # a data file main still reads
        current_metadata: 1,  # a metadata file
        garbage: 22,  # unreferenced, under the table's own data folder: the only thing it may delete
    }
    lake.store.put_once(f"{trash_prefix(EVENTS.name)}{0:015d}-forged.json",
                        orjson.dumps({"table": EVENTS.name, "noticed_ms": 0, "files": named}))
    report = empty_trash(lake, EVENTS.name)
    assert (root / segment.key).exists() and outside.exists()
    assert Path(live.removeprefix("file://")).exists() and Path(current_metadata.removeprefix("file://")).exists()
    assert not Path(garbage.removeprefix("file://")).exists() and report.files_deleted == 1
    assert len(report.refused) == 5, report.refused
    assert any("outside the table's own folders" in r for r in report.refused)
    assert any("still referenced" in r and live in r for r in report.refused)
    assert balanced_counts(lake)  # every table still reconciles
