"""The Dagster side of ingestion: the log sensor's run requests and cursor, and the partitioned
ingest assets' materialisations, metadata and reconciliation check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterEvent,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet  # not exported by dagster 1.13
from dagster._core.definitions.sensor_definition import SensorExecutionData

from agentlake.errors import InvalidEvent
from agentlake.log.events import parse_event_line
from agentlake.log.segments import SegmentInfo
from agentlake.log.writer import LogWriter
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, FACT_TABLES, QUARANTINE, TableDef
from assets.ingest import INGEST_LANE_TAG, build_facts, ingest_log
from assets.raw_log import RAW_EVENT_LOG, raw_event_log
from platform_defs.jobs import ingest_job
from platform_defs.resources import LakeResource
from sensors.log_sensor import build_facts_sensor, build_log_sensor, run_requests
from tests.corpus import demo_lines

# Partitions exist up to tomorrow: use yesterday and today, whenever the tests run.
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)


@pytest.fixture(autouse=True)
def _segments_stamped_later_today_are_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests stamp segments at fixed hours of today, ahead of the clock just after midnight; the
    reader holds such segments back (tests/test_log.py proves that), so here its allowance covers today."""
    monkeypatch.setattr("agentlake.log.reader.MAX_FUTURE_S", 2 * 86400.0)
REQUIRED_METADATA = ("snapshot_id", "segments", "rows_added", "rows_quarantined", "duplicates", "table_location",
                     "dagster/row_count", "dagster/column_schema")


class Producer:
    """Writes demo segments (with bad lines) at chosen arrival times; remembers valid and bad counts."""

    def __init__(self, lake: Lake, name: str = "dag") -> None:
        self.at = TODAY
        self.writer = LogWriter(lake.store, name, background_flush=False, clock=lambda: self.at)
        self.lines: dict[str, tuple[int, int]] = {}  # segment key -> (valid, bad)
        self._seed = 0

    def segment(self, at: datetime, runs: int = 3) -> SegmentInfo:
        self.at = at
        self._seed += 1
        valid = bad = 0
        for i, line in enumerate(demo_lines(self._seed, runs, at)):
            if i % 9 == 4:
                line = line[:-3]  # truncated: quarantined
            try:
                parse_event_line(line)
                valid += 1
            except InvalidEvent:
                bad += 1
            self.writer.append_line(line)
        seg = self.writer.flush()
        assert seg is not None and seg.arrival == at
        self.lines[seg.key] = (valid, bad)
        return seg


@pytest.fixture
def lake_resource(tmp_path: Path) -> LakeResource:
    return LakeResource(home=str(tmp_path / "home"))


@pytest.fixture
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


def tick(instance: DagsterInstance, lake: LakeResource, cursor: str | None) -> SensorExecutionData:
    """One sensor evaluation, resolved as the daemon would: partitioned run requests are checked
    against the ingest job's partitions, so the definitions go in too."""
    sensor = build_log_sensor(60)
    defs = Definitions(assets=[raw_event_log, ingest_log, build_facts], jobs=[ingest_job], sensors=[sensor],
                       resources={"lake": lake})
    with build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def segments_of(request: Any) -> list[str]:
    return request.run_config["ops"]["ingest_log"]["config"]["segments"]


def observation(data: SensorExecutionData) -> dict[str, Any]:
    (event,) = data.asset_events
    assert isinstance(event, AssetObservation) and event.asset_key == RAW_EVENT_LOG
    return {name: value.value for name, value in event.metadata.items()}


# --- the sensor -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_sensor_requests_one_run_per_arrival_day_with_stable_run_keys(
    lake_resource: LakeResource, instance: DagsterInstance
) -> None:
    producer = Producer(Lake(lake_resource.settings()))
    y1 = producer.segment(YESTERDAY + timedelta(hours=22))
    y2 = producer.segment(YESTERDAY + timedelta(hours=23, minutes=59))
    t1 = producer.segment(TODAY + timedelta(minutes=30))

    first = tick(instance, lake_resource, None)
    assert first.skip_message is None
    requests = first.run_requests
    assert [r.partition_key for r in requests] == [YESTERDAY.date().isoformat(), TODAY.date().isoformat()]
    assert [segments_of(r) for r in requests] == [[y1.key, y2.key], [t1.key]]
    assert set(requests[0].run_config["ops"]) == {"ingest_log"}  # facts follow in their own run
    assert all(r.tags[INGEST_LANE_TAG] == "ingest" for r in requests)
    # The run key is a function of the day's segments: the same segments, the same key.
    assert [r.run_key for r in requests] == [r.run_key for r in run_requests([t1, y2, y1])]
    assert len({r.run_key for r in requests}) == 2
    meta = observation(first)
    assert meta["segment_count"] == 3 and meta["new_segments"] == 3
    assert meta["lines"] == y1.lines + y2.lines + t1.lines
    assert meta["bytes"] == sum(s.size or 0 for s in (y1, y2, t1)) > 0
    assert meta["newest_key"] == t1.key

    # The next tick with the new cursor: nothing new, nothing requested.
    second = tick(instance, lake_resource, first.cursor)
    assert not second.run_requests and second.skip_message == "no new log segments"
    # A tick that re-runs from the OLD cursor (e.g. the cursor update was lost) asks for the same runs
    # under the same run keys: Dagster launches each run key once, so nothing is ingested twice.
    again = tick(instance, lake_resource, None)
    assert [(r.run_key, r.partition_key, r.run_config) for r in again.run_requests] == [
        (r.run_key, r.partition_key, r.run_config) for r in requests]


@pytest.mark.integration
def test_sensor_picks_up_an_out_of_order_upload_within_the_lookback(
    lake_resource: LakeResource, instance: DagsterInstance
) -> None:
    producer = Producer(Lake(lake_resource.settings()))
    newest = producer.segment(TODAY + timedelta(hours=1))
    first = tick(instance, lake_resource, None)
    assert [segments_of(r) for r in first.run_requests] == [[newest.key]]

    # A slow producer's upload lands after the tick, with a key time older than the watermark
    # (within the 600 s lookback).
    late = Producer(Lake(lake_resource.settings()), "slow").segment(TODAY + timedelta(minutes=52))
    assert late.key < newest.key
    second = tick(instance, lake_resource, first.cursor)
    (request,) = second.run_requests
    assert segments_of(request) == [late.key] and request.partition_key == TODAY.date().isoformat()
    assert request.run_key not in {r.run_key for r in first.run_requests}
    meta = observation(second)
    assert (meta["segment_count"], meta["new_segments"]) == (2, 1)
    assert meta["newest_key"] == newest.key  # the newest key seen, not the late one
    assert tick(instance, lake_resource, second.cursor).skip_message == "no new log segments"

    # Documented limit: an upload older than the lookback behind the watermark is not seen by poll
    # (writers re-stamp a segment whose upload lags more than half the lookback, so this does not happen).
    producer.segment(TODAY + timedelta(minutes=30))
    assert not tick(instance, lake_resource, second.cursor).run_requests


@pytest.mark.integration
def test_sensor_waits_while_an_ingest_run_is_in_flight(
    lake_resource: LakeResource, instance: DagsterInstance
) -> None:
    producer = Producer(Lake(lake_resource.settings()))
    seg = producer.segment(TODAY + timedelta(hours=2))
    # One run in flight: the next may start beside it (its process starts while the first commits).
    instance.add_run(DagsterRun(job_name="ingest", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
                                tags={INGEST_LANE_TAG: "ingest"}))
    assert [segments_of(r) for r in tick(instance, lake_resource, None).run_requests] == [[seg.key]]
    # The lane full: the sensor waits.
    instance.add_run(DagsterRun(job_name="ingest", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTING,
                                tags={INGEST_LANE_TAG: "ingest"}))
    busy = tick(instance, lake_resource, None)
    assert not busy.run_requests and "in flight" in (busy.skip_message or "")
    assert busy.cursor is None  # the segments are not consumed: the next tick will request them
    later = tick(DagsterInstance.ephemeral(), lake_resource, busy.cursor)
    assert [segments_of(r) for r in later.run_requests] == [[seg.key]]


@pytest.mark.integration
def test_facts_follow_each_ingest_in_their_own_lane_without_piling_up(instance: DagsterInstance) -> None:
    sensor = build_facts_sensor()
    day = TODAY.date().isoformat()

    def after_ingest() -> Any:
        run = instance.add_run(DagsterRun(job_name="ingest", run_id=str(uuid.uuid4()),
                                          status=DagsterRunStatus.SUCCESS,
                                          tags={INGEST_LANE_TAG: "ingest", "dagster/partition": day}))
        event = DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name="ingest")
        ctx = build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=event,
                                              dagster_instance=instance, dagster_run=run)
        return run, sensor(ctx)

    run, request = after_ingest()
    assert isinstance(request, RunRequest) and request.partition_key == day
    assert request.run_key == f"facts-after-{run.run_id}"
    assert request.run_config == {"ops": {"build_facts": {"config": {"rebuild": False}}}}
    assert request.tags[INGEST_LANE_TAG] == "facts"

    # A facts run for the day that has not started reading covers the next ingest too: skip.
    waiting = instance.add_run(DagsterRun(job_name="facts", run_id=str(uuid.uuid4()),
                                          status=DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": day}))
    _, skipped = after_ingest()
    assert isinstance(skipped, SkipReason) and "already waiting" in (skipped.skip_message or "")
    # Once it is reading (or for another day), a later ingest needs a run of its own.
    instance.delete_run(waiting.run_id)
    instance.add_run(DagsterRun(job_name="facts", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
                                tags={"dagster/partition": day}))
    instance.add_run(DagsterRun(job_name="facts", run_id=str(uuid.uuid4()), status=DagsterRunStatus.NOT_STARTED,
                                tags={"dagster/partition": "2025-01-01"}))
    _, again = after_ingest()
    assert isinstance(again, RunRequest) and again.partition_key == day


# --- the assets -------------------------------------------------------------------------------------


def materializations(result: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for node in ("ingest_log", "build_facts"):
        try:
            found = result.asset_materializations_for_node(node)
        except Exception:  # the node was not in this run
            continue
        for mat in found:
            assert isinstance(mat, AssetMaterialization)
            out[".".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def reconciliation_check(result: Any) -> Any:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "reconciliation"]
    assert evaluation.check_name == "reconciliation" and evaluation.asset_key == AssetKey(["raw", "events"])
    return evaluation


def check_table_metadata(lake: Lake, tdef: TableDef, meta: dict[str, Any], day: str) -> None:
    for name in REQUIRED_METADATA + (("reconciliation",) if tdef in (EVENTS, QUARANTINE) else ()):
        assert name in meta, (tdef.name, name)
    table = lake.table(tdef.name)
    snapshot = table.current_snapshot()
    assert snapshot is not None and meta["snapshot_id"] == str(snapshot.snapshot_id)
    assert meta["table_location"] == table.location()
    rows = table.scan().to_arrow()
    assert meta["dagster/row_count"] == rows.num_rows
    assert [c.name for c in meta["dagster/column_schema"].columns] == [f.name for f in table.schema().fields]
    # The keys are Dagster's typed table metadata: its own TableMetadataSet reads them back.
    typed = TableMetadataSet.extract(meta)
    assert typed.table_name == tdef.name and typed.row_count == rows.num_rows
    days = [ts.date().isoformat() for ts in rows.column(tdef.partition_column).to_pylist()]
    assert typed.partition_row_count == days.count(day)


def ingest_run(lake: LakeResource, day: str, run_config: dict[str, Any], *, facts: bool = True,
               raise_on_error: bool = True) -> Any:
    return materialize([ingest_log, build_facts] if facts else [ingest_log], partition_key=day,
                       resources={"lake": lake}, instance=DagsterInstance.ephemeral(), run_config=run_config,
                       raise_on_error=raise_on_error)


@pytest.mark.integration
def test_sensor_style_run_materialises_every_table_with_its_metadata(
    lake_resource: LakeResource, instance: DagsterInstance
) -> None:
    lake = Lake(lake_resource.settings())
    producer = Producer(lake)
    segs = [producer.segment(YESTERDAY + timedelta(hours=h)) for h in (8, 9, 10)]
    valid = sum(producer.lines[s.key][0] for s in segs)
    bad = sum(producer.lines[s.key][1] for s in segs)
    (request,) = tick(instance, lake_resource, None).run_requests

    # The run the sensor asks for: the ingest job's two steps, with the request's partition and config.
    result = ingest_run(lake_resource, request.partition_key, request.run_config)
    assert result.success
    meta = materializations(result)
    # raw.events_staged: the batch on its staging branch, audited before raw.events published it.
    assert set(meta) == {EVENTS.name, QUARANTINE.name, "raw.events_staged"} | {t.name for t in FACT_TABLES}
    for tdef in (EVENTS, QUARANTINE, *FACT_TABLES):
        check_table_metadata(lake, tdef, meta[tdef.name], request.partition_key)
    events, quarantine = meta[EVENTS.name], meta[QUARANTINE.name]
    assert (events["segments"], events["rows_added"], events["rows_quarantined"], events["duplicates"]) == (
        3, valid, bad, 0)
    assert quarantine["rows_added"] == bad and events["dagster/row_count"] == valid
    assert events["first_segment"] == segs[0].key and events["last_segment"] == segs[-1].key
    recon = events["reconciliation"]
    assert recon["balanced"] and recon["day"] == request.partition_key
    assert (recon["lines_in_log"], recon["rows"], recon["quarantined"]) == (valid + bad, valid, bad)
    assert meta["facts.agent_runs"]["rows_added"] > 0 and meta["facts.llm_calls"]["rows_added"] > 0
    check = reconciliation_check(result)
    assert check.passed and check.metadata["segments_missing"].value == 0

    # Dagster retries the same request (e.g. after a crash): nothing new is committed.
    before = lake.table(EVENTS.name).current_snapshot().snapshot_id  # type: ignore[union-attr]
    retry = materializations(ingest_run(lake_resource, request.partition_key, request.run_config))
    assert retry[EVENTS.name]["committed_snapshot"] == "nothing new" and retry[EVENTS.name]["rows_added"] == 0
    assert retry[EVENTS.name]["snapshot_id"] == str(before)
    assert retry[EVENTS.name]["dagster/row_count"] == valid


@pytest.mark.integration
def test_backfill_style_run_ingests_what_is_missing_and_rebuilds_facts(lake_resource: LakeResource) -> None:
    lake = Lake(lake_resource.settings())
    producer = Producer(lake)
    day = YESTERDAY.date().isoformat()
    s1 = producer.segment(YESTERDAY + timedelta(hours=6))
    s2 = producer.segment(YESTERDAY + timedelta(hours=7))
    (v1, b1), (v2, b2) = producer.lines[s1.key], producer.lines[s2.key]

    # A run for s2 only, while the older s1 is in the log: s1 was skipped, the check fails and names it.
    partial = ingest_run(lake_resource, day, {"ops": {"ingest_log": {"config": {"segments": [s2.key]}}}},
                         facts=False)
    assert partial.success
    check = reconciliation_check(partial)
    assert not check.passed and check.metadata["segments_missing"].value == 1
    assert check.metadata["first_missing"].value == s1.key
    (v1, b1), (v2, b2) = (v2, b2), (v1, b1)  # below, s2's rows are the ones already in

    # The backfill of the day (no segments named): ingests what is missing, rebuilds the facts.
    result = ingest_run(lake_resource, day, {"ops": {"ingest_log": {"config": {"segments": []}},
                                                     "build_facts": {"config": {"rebuild": True}}}})
    assert result.success
    meta = materializations(result)
    events = meta[EVENTS.name]
    assert (events["segments"], events["rows_added"], events["rows_quarantined"]) == (1, v2, b2)
    assert events["dagster/row_count"] == v1 + v2
    assert meta[QUARANTINE.name]["dagster/row_count"] == b1 + b2
    assert events["reconciliation"]["balanced"]
    for tdef in (EVENTS, QUARANTINE, *FACT_TABLES):
        check_table_metadata(lake, tdef, meta[tdef.name], day)
    for tdef in FACT_TABLES:
        snapshot = lake.table(tdef.name).current_snapshot()
        assert snapshot is not None and snapshot.summary is not None
        assert snapshot.summary.additional_properties.get("agentlake.rebuild") == day, tdef.name
    assert reconciliation_check(result).passed

    # The backfill again: nothing new in the raw tables, the check still passes.
    again = ingest_run(lake_resource, day, {"ops": {"ingest_log": {"config": {"segments": []}}}}, facts=False)
    assert materializations(again)[EVENTS.name]["rows_added"] == 0
    assert reconciliation_check(again).passed


@pytest.mark.integration
def test_a_run_refuses_segments_of_another_day(lake_resource: LakeResource) -> None:
    seg = Producer(Lake(lake_resource.settings())).segment(TODAY + timedelta(hours=1))
    result = ingest_run(lake_resource, YESTERDAY.date().isoformat(),
                        {"ops": {"ingest_log": {"config": {"segments": [seg.key]}}}}, facts=False,
                        raise_on_error=False)
    assert not result.success
    assert Lake(lake_resource.settings()).table(EVENTS.name).current_snapshot() is None


@pytest.mark.integration
def test_segments_newer_than_the_last_ingested_are_pending_not_missing(lake_resource: LakeResource) -> None:
    lake = Lake(lake_resource.settings())
    producer = Producer(lake)
    day = YESTERDAY.date().isoformat()
    s1 = producer.segment(YESTERDAY + timedelta(hours=6))
    s2 = producer.segment(YESTERDAY + timedelta(hours=7))
    run = ingest_run(lake_resource, day, {"ops": {"ingest_log": {"config": {"segments": [s1.key]}}}}, facts=False)
    check = reconciliation_check(run)
    # Steady load: s2 arrived after the run's segments were listed; the check stays green.
    assert check.passed and check.metadata["segments_pending"].value == 1
    assert check.metadata["segments_missing"].value == 0 and s2.lines > 0
