"""Ingestion on an object store that misbehaves: 500s, 503 SlowDown, resets, lost responses, cut
bodies, delays and a 30 s outage, injected by a proxy between AgentLake and the S3 server.

An unreliable store delays ingestion but never corrupts it: every run below ends with the
tables reconciling exactly against the log, and no ``event_id`` twice in ``raw.events``. Ingests
go through the quality gate as the CLI and Dagster run them (stage on a branch, audit, keep the
audit's result in the store, publish), so the faults reach every request of that path too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.table.snapshots import ancestors_of

from agentlake.config import S3Settings, Settings
from agentlake.errors import AlreadyExists, StoreUnavailable
from agentlake.gate.publish import held_days
from agentlake.gate.suites import QualityPolicy
from agentlake.gate.validations import read_validation
from agentlake.log.reader import LogReader, ReadAhead
from agentlake.log.segments import SegmentInfo
from agentlake.log.writer import LogWriter
from agentlake.pipeline.flow import ingest_then_facts
from agentlake.pipeline.ingest import ingest
from agentlake.pipeline.reconcile import reconcile
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.storage.retry import is_transient
from agentlake.storage.store import ObjectStore
from agentlake.tables.lake import Lake
from agentlake.tables.ledger import read_ledger
from agentlake.tables.schemas import ALL_TABLES, EVENTS
from tests.corpus import demo_lines, ticking_clock
from tests.faulty_s3 import FAULTS, FaultyS3Proxy

pytestmark = pytest.mark.integration

DAY = "2026-11-20"
START = datetime(2026, 11, 20, 9, tzinfo=UTC)


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyS3Proxy]:
    with FaultyS3Proxy(s3_endpoint, seed=20261120) as p:
        yield p


def gated(run_id: str, lake: Lake) -> IngestOptions:
    """Ingest as the CLI and Dagster do: through the quality gate, with the deployment's policy."""
    return IngestOptions(run_id=run_id, quality=QualityPolicy.from_settings(lake.settings))


def assert_audited(lake: Lake) -> None:
    """Every row on main came through one staged, audited batch per ingest, and nothing is held."""
    events = lake.table(EVENTS.name)
    assert not held_days(events.properties)
    for snap in ancestors_of(events.current_snapshot(), events.metadata):
        props = snap.summary.additional_properties if snap.summary is not None else {}
        if int(props.get("added-records", "0")):
            assert props.get("agentlake.staged") == "true", props
            assert read_validation(lake.store, EVENTS.name, snap.snapshot_id)["success"], snap.snapshot_id


def lake_via(tmp_path: Path, s3: S3Settings, endpoint: str, *, store_retry_s: float = 300.0) -> Lake:
    """A lake on the test bucket, reaching it through ``endpoint`` (the proxy, or the server itself)."""
    return Lake(Settings(home=tmp_path / "home", store="s3", s3=s3.model_copy(update={"endpoint": endpoint}),
                         store_retry_s=store_retry_s))


@pytest.fixture
def corpus() -> list[list[bytes]]:
    """100 small segments' lines: demo events, a bad line in every 10th, a repeat of an earlier event in every 7th."""
    lines = demo_lines(seed=11, runs=120, start=START)
    size = -(-len(lines) // 100)
    segments = [lines[i * size : (i + 1) * size] for i in range(100)]
    rng = random.Random(5)
    for i, seg in enumerate(segments):
        if i % 10 == 3:
            seg.insert(rng.randrange(len(seg) + 1), b'{"event_id": "broken", "ts": ')
        if i % 7 == 6:
            seg.append(rng.choice(segments[i - 1]))
    return segments


def write_segments(store: ObjectStore, corpus: list[list[bytes]], producers: int = 1) -> list[SegmentInfo]:
    """One segment per entry of ``corpus``, written by ``producers`` concurrent producers."""
    sealed: list[SegmentInfo] = []

    def produce(n: int) -> None:
        with LogWriter(store, f"producer{n}", background_flush=False, clock=ticking_clock(START)) as writer:
            for lines in corpus[n::producers]:
                for line in lines:
                    writer.append_line(line)
                info = writer.flush()
                assert info is not None
                sealed.append(info)

    with ThreadPoolExecutor(producers) as pool:
        list(pool.map(produce, range(producers)))
    return sorted(sealed)


def assert_exact(lake: Lake, corpus: list[list[bytes]], report: IngestReport | None = None) -> None:
    """The tables hold the log exactly: reconciled, every valid event once, every bad line quarantined."""
    (result,) = reconcile(lake, DAY)
    assert result.balanced, result.as_dict()
    assert result.segments_in_log == len(corpus) and result.segments_pending == 0
    lines = [line for seg in corpus for line in seg]
    bad = sum(1 for line in lines if line.startswith(b'{"event_id": "broken"'))
    assert result.lines_in_log == len(lines)
    assert result.quarantined == bad
    assert result.duplicates == len(lines) - bad - len(set(lines) - {b'{"event_id": "broken", "ts": '})
    ids = pl.from_arrow(lake.table(EVENTS.name).scan(selected_fields=("event_id",)).to_arrow())
    assert isinstance(ids, pl.DataFrame)
    assert ids.height == result.rows and ids.get_column("event_id").n_unique() == ids.height
    if report is not None:
        assert (report.rows, report.quarantined, report.duplicates) == (result.rows, result.quarantined,
                                                                        result.duplicates)


def test_ingest_through_a_faulty_store(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """10 % of requests fail (500, 503 SlowDown, reset, lost response, cut body), 10 % wait up to 2 s:
    writing and ingesting 100 segments completes and reconciles exactly."""
    proxy.set_faults(fail_share=0.10, delay_share=0.10)
    lake = lake_via(tmp_path, s3_settings, proxy.url)
    segments = write_segments(lake.store, corpus, producers=4)
    assert len({s.key for s in segments}) == 100
    report = ingest(lake, lake.log.list_day(DAY), gated("faulty", lake))
    faults = dict(proxy.outcomes)
    proxy.set_faults(0.0, 0.0)
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    assert_exact(direct, corpus, report)
    assert_audited(direct)
    assert [s.key for s in direct.log.list_day(DAY)] == [s.key for s in segments]  # no segment written twice
    # The faults happened, of every kind, to both clients (obstore for the log, pyarrow for the tables).
    assert all(faults.get(kind, 0) > 0 for kind in FAULTS), faults
    assert faults.get("delay", 0) > 0, faults
    for client in ("obstore", "pyarrow"):
        assert sum(n for k, n in proxy.by_client.items() if k.startswith(client) and k.split()[1] in FAULTS) > 0
    # A second ingest has nothing left to do.
    again = ingest(direct, direct.log.list_day(DAY), gated("again", direct))
    assert again.segments == 0 and again.rows == 0


def test_ingest_resumes_after_the_store_is_down_for_30s(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """The store goes down for 30 s while the segments are read: the ingest waits and finishes by itself."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    segments = write_segments(direct.store, corpus[:40])
    lake = lake_via(tmp_path, s3_settings, proxy.url)
    middle = segments[20].key
    proxy.down_on(lambda method, path: method == "GET" and path.endswith(middle), 30.0)
    started = time.monotonic()
    report = ingest(lake, segments, gated("outage", lake))
    took = time.monotonic() - started
    assert proxy.outcomes["outages"] == 1 and proxy.outcomes["down"] > 0
    assert 30.0 <= took < 30.0 + 25.0, took  # waited out the outage, then resumed within seconds
    assert report.store_retries > 0 and report.segments == 40
    assert_exact(direct, corpus[:40], report)
    assert_audited(direct)


def test_giving_up_names_the_store_and_leaves_the_tables_untouched(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """A store down for longer than AGENTLAKE_STORE_RETRY_S: a clear error, nothing committed, and the
    next ingest, once the store is back, completes exactly."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    segments = write_segments(direct.store, corpus[:5])
    before = {t.name: direct.table(t.name).current_snapshot() for t in ALL_TABLES}
    lake = lake_via(tmp_path, s3_settings, proxy.url, store_retry_s=1.0)
    proxy.down_for(600.0)
    with pytest.raises(StoreUnavailable) as failure:
        ingest_then_facts(lake, segments, gated("gives-up", lake))
    message = str(failure.value)
    assert f"bucket {s3_settings.bucket!r} at {proxy.url}" in message
    assert "AGENTLAKE_STORE_RETRY_S" in message and "run it again" in message
    assert s3_settings.secret_access_key and s3_settings.secret_access_key.get_secret_value() not in message
    assert {t.name: direct.table(t.name).current_snapshot() for t in ALL_TABLES} == before
    proxy.down_for(0.0)
    report = ingest(lake, segments, gated("back", lake))
    assert report.segments == 5
    assert_exact(direct, corpus[:5], report)
    assert_audited(direct)


def test_outages_between_commits(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """The store fails after raw.events was published and before raw.quarantine committed, and again
    in the middle of the facts: each retry commits only what is missing, and the report still counts
    what the first attempt committed."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    segments = write_segments(direct.store, corpus[:12])
    lake = lake_via(tmp_path, s3_settings, proxy.url)
    lake.table(EVENTS.name)  # the tables exist before the traps are set
    proxy.down_on(lambda method, path: "/quarantine/data/" in path, 2.0)
    proxy.down_on(lambda method, path: "/agent_runs/data/" in path, 2.0)
    report = ingest_then_facts(lake, segments, gated("between", lake))
    assert proxy.outcomes["outages"] == 2
    assert report.store_retries > 0 and report.attempts > 1
    assert_exact(direct, corpus[:12], report)
    assert_audited(direct)
    for tdef in ALL_TABLES:  # one commit each on main: nothing committed twice, nothing half
        table = direct.table(tdef.name)
        on_main = list(ancestors_of(table.current_snapshot(), table.metadata))
        # raw.events: the empty snapshot a first staging starts main with, then the one published batch.
        assert len(on_main) == (2 if tdef is EVENTS else 1), tdef.name
        assert read_ledger(table.properties, DAY).segments == len(segments), tdef.name


def test_a_lost_create_response_is_the_write_itself(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy
) -> None:
    """A conditional create lands, its response is lost: the retry finds its own bytes and succeeds,
    while another writer's bytes at the key are still refused."""
    store = lake_via(tmp_path, s3_settings, proxy.url).store
    proxy.fault_on(lambda method, path: method == "PUT" and path.endswith("/log/v1/one"), "lost")
    store.put_once("log/v1/one", b"mine")
    assert proxy.outcomes["lost"] == 1
    assert store.get("log/v1/one") == b"mine"
    proxy.fault_on(lambda method, path: method == "PUT" and path.endswith("/log/v1/one"), "lost")
    with pytest.raises(AlreadyExists):
        store.put_once("log/v1/one", b"someone else's")
    # Through the producer SDK: one segment, its bytes, no conflict.
    proxy.fault_on(lambda method, path: method == "PUT" and "/log/v1/dt=" in path, "lost")
    with LogWriter(store, "lost", background_flush=False, clock=ticking_clock(START)) as writer:
        writer.append_line(b'{"event_id": "e1"}')
    assert proxy.outcomes["lost"] == 3
    (seg,) = LogReader(store).list_day(DAY)
    assert list(LogReader(store).read_lines(seg.key)) == [b'{"event_id": "e1"}']


def test_a_cut_segment_body_is_read_again_or_raises_never_short(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """A reset in the middle of a segment's body: the store reads it again whole; with the store's
    retries off, the read raises an error ingestion retries. Never a short segment."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    (seg,) = write_segments(direct.store, [corpus[0] * 40])
    expected = corpus[0] * 40
    proxied = s3_settings.model_copy(update={"endpoint": proxy.url})

    def cut_next_read() -> None:
        proxy.fault_on(lambda method, path: method == "GET" and path.endswith(seg.key), "cut")

    cut_next_read()
    assert list(LogReader(ObjectStore.s3(proxied)).read_lines(seg.key)) == expected
    cut_next_read()
    with pytest.raises(Exception) as cut:
        list(LogReader(ObjectStore.s3(proxied, max_retries=0)).read_lines(seg.key))
    assert is_transient(cut.value), cut.value
    assert proxy.outcomes["cut"] == 2


def test_read_ahead_hands_out_every_segment_whole(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy, corpus: list[list[bytes]]
) -> None:
    """Segments read ahead (a head buffered, the rest streamed on demand) come out exactly as written,
    with delays and cut bodies on the way."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    contents = [corpus[i] * (1 + 30 * (i % 2)) for i in range(6)]
    segments = write_segments(direct.store, contents)
    proxy.set_faults(fail_share=0.0, delay_share=0.5)
    for i in (1, 3):
        proxy.fault_on(lambda method, path, key=segments[i].key: method == "GET" and path.endswith(key), "cut")
    reader = LogReader(lake_via(tmp_path, s3_settings, proxy.url).store)
    ahead = ReadAhead(reader, [s.key for s in segments], depth=3, buffer_bytes=1024)
    for seg, lines in zip(segments, contents, strict=True):
        got = b"".join(run for _, run in ahead.iter_chunks(seg.key, chunk_bytes=4096))
        assert got == b"".join(line + b"\n" for line in lines)
    assert proxy.outcomes["cut"] == 2 and proxy.outcomes["delay"] > 0


def test_a_request_left_unanswered_times_out_and_is_retried(
    tmp_path: Path, s3_settings: S3Settings, proxy: FaultyS3Proxy
) -> None:
    """The store accepts a request and never answers: the client gives up after its timeout and retries."""
    direct = lake_via(tmp_path, s3_settings, s3_settings.endpoint or "")
    direct.store.put_once("log/v1/slow", b"answer")
    store = ObjectStore.s3(s3_settings.model_copy(update={"endpoint": proxy.url}), request_timeout_s=1.0)
    proxy.fault_on(lambda method, path: method == "GET" and path.endswith("/log/v1/slow"), "stall")
    started = time.monotonic()
    assert store.get("log/v1/slow") == b"answer"
    assert proxy.outcomes["stall"] == 1 and time.monotonic() - started < proxy.stall_s
