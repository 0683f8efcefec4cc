"""The raw event log: write-once segments, many producers, a cursor that never skips a late upload."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import zstandard
from pydantic import SecretStr

from agentlake.config import Settings
from agentlake.errors import CorruptSegment, ForgedSegment, InvalidSegmentKey
from agentlake.log.reader import LogCursor, LogReader
from agentlake.log.segments import SegmentInfo, checksum, segment_key
from agentlake.log.writer import LogWriter
from agentlake.storage.store import ObjectStore
from tests.producers import produce


def _event(i: int) -> dict[str, object]:
    return {"event_id": f"e{i}", "run_id": "r", "agent_id": "a", "type": "llm_call", "ts": "2026-11-26T07:00:00Z"}


@pytest.mark.unit
def test_segment_key_round_trip_and_sorting() -> None:
    t = datetime(2026, 11, 26, 7, 5, 9, 123456, tzinfo=UTC)
    key = segment_key(arrival=t, producer="p1", first_seq=40, lines=7, digest="0123456789abcdef")
    info = SegmentInfo.from_key(key)
    assert (info.dt, info.producer, info.first_seq, info.last_seq, info.lines) == ("2026-11-26", "p1", 40, 46, 7)
    later = segment_key(arrival=t + timedelta(hours=1), producer="a", first_seq=0, lines=1, digest="0" * 16)
    assert key < later  # keys sort by arrival across hour folders
    with pytest.raises(InvalidSegmentKey, match="not a segment key"):
        SegmentInfo.from_key("log/v1/dt=2026-11-26/hr=07/oops.ndjson.zst")


@pytest.mark.integration
def test_writer_seals_on_count_and_records_lines_seq_and_checksum(store: ObjectStore) -> None:
    with LogWriter(store, "prod1", max_segment_events=4, background_flush=False) as writer:
        seqs = [writer.append(_event(i)) for i in range(10)]
    assert seqs == list(range(10))
    segments = LogReader(store).list_all()
    assert [(s.first_seq, s.lines) for s in segments] == [(0, 4), (4, 4), (8, 2)]
    for seg in segments:
        raw = store.get(seg.key)
        assert checksum(raw) == seg.checksum
        lines = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 20).splitlines()
        assert [orjson.loads(line)["event_id"] for line in lines] == [
            f"e{i}" for i in range(seg.first_seq, seg.first_seq + seg.lines)
        ]


@pytest.mark.integration
def test_writer_seals_on_size_and_on_age(store: ObjectStore) -> None:
    with LogWriter(store, "bysize", max_segment_bytes=1000, background_flush=False) as writer:
        for i in range(30):
            writer.append({**_event(i), "payload": "x" * 100})
    assert len(LogReader(store).list_all()) >= 4
    writer = LogWriter(store, "byage", max_segment_age_s=0.2)
    writer.append(_event(0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not writer.stats.segments:
        time.sleep(0.05)
    assert writer.stats.segments == 1  # sealed by the timer, not by close()
    writer.close()


@pytest.mark.integration
def test_bad_lines_are_logged_as_they_are(store: ObjectStore) -> None:
    raw = [b"{not json", b"", b"\xff\xfe binary", b'{"event_id": 1}\r', b"[1,2]"]
    with LogWriter(store, "raw", background_flush=False) as writer:
        for line in raw:
            writer.append_line(line)
    (seg,) = LogReader(store).list_all()
    assert list(LogReader(store).read_lines(seg.key)) == raw
    assert seg.lines == len(raw)


@pytest.mark.integration
def test_reader_streams_batches_with_line_offsets(store: ObjectStore) -> None:
    with LogWriter(store, "big", max_segment_events=1_000_000, max_segment_bytes=1 << 30, background_flush=False) as w:
        for i in range(30_000):
            w.append({**_event(i), "payload": "y" * 200})
    (seg,) = LogReader(store).list_all()
    batches = list(LogReader(store).iter_batches(seg.key, chunk_bytes=1 << 20))
    assert len(batches) > 3  # streamed in bounded pieces, not read whole
    offsets = [o for b in batches for o in b.column("line_offset").to_pylist()]
    assert offsets == list(range(30_000))
    last = batches[-1]
    assert orjson.loads(last.column("line")[-1].as_py())["event_id"] == "e29999"


@pytest.mark.integration
def test_a_retried_upload_is_idempotent_and_other_content_never_overwrites(store: ObjectStore) -> None:
    fixed = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)

    def write(event: dict[str, object]) -> str:
        writer = LogWriter(store, "same", background_flush=False, clock=lambda: fixed)
        writer.producer = "same0123456789ab"  # one writer's upload, retried: the same id, time and seq
        writer.append(event)
        first = writer.flush()
        assert writer.flush() is None  # nothing buffered: no empty segment
        assert first is not None
        return first.key

    first = write(_event(1))
    assert write(_event(1)) == first  # identical bytes at an identical key: a retried upload, accepted
    other = write(_event(2))  # same producer, time and seq, other bytes: the checksum makes a new key
    assert other != first
    assert {s.key for s in LogReader(store).list_all()} == {first, other}
    assert b'"e1"' in next(LogReader(store).read_lines(first))


@pytest.mark.unit
def test_cursor_round_trips_through_json() -> None:
    cursor = LogCursor(watermark=datetime(2026, 11, 26, tzinfo=UTC), seen=frozenset({"a", "b"}))
    assert LogCursor.from_json(cursor.to_json()) == cursor
    assert LogCursor.from_json(None) == LogCursor()


@pytest.mark.integration
def test_cursor_finds_a_late_upload_inside_the_lookback(store: ObjectStore) -> None:
    t0 = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)

    def write_at(moment: datetime, producer: str) -> str:
        with LogWriter(store, producer, background_flush=False, clock=lambda: moment) as w:
            w.append(_event(0))
        return w.stats.sealed[0].key

    reader = LogReader(store, lookback_s=600)
    fast = write_at(t0 + timedelta(seconds=30), "fast")
    new, cursor = reader.poll(LogCursor())
    assert [s.key for s in new] == [fast]
    slow = write_at(t0, "slow")  # sealed earlier, landed later
    new, cursor = reader.poll(cursor)
    assert [s.key for s in new] == [slow]
    new, cursor = reader.poll(cursor)
    assert new == []
    # Past the lookback, old keys drop out of the cursor's memory without being re-listed.
    write_at(t0 + timedelta(hours=1), "later")
    new, cursor = reader.poll(cursor)
    assert len(new) == 1 and fast not in cursor.seen and slow not in cursor.seen
    assert reader.poll(cursor)[0] == []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_four_producers_with_delayed_uploads_every_event_once(store_spec: dict[str, object]) -> None:
    store = _open(store_spec)
    reader = LogReader(store, lookback_s=600)
    handed_out: list[SegmentInfo] = []
    late = 0
    done = threading.Event()

    def follow() -> None:
        nonlocal late
        cursor = LogCursor()
        while True:
            finished = done.is_set()
            new, next_cursor = reader.poll(cursor)
            late += sum(1 for seg in new if cursor.watermark and seg.arrival < cursor.watermark)
            handed_out.extend(new)
            cursor = next_cursor
            if finished:
                return
            time.sleep(0.05)

    follower = threading.Thread(target=follow)
    follower.start()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        written = pool.starmap(produce, [(store_spec, f"proc{i}", 25_000, i, 0.3) for i in range(4)])
        # Let the workers exit on their own: the context's terminate() can hang joining a worker it
        # signalled mid-exit (seen once in CI).
        pool.close()
        pool.join()
    done.set()
    follower.join()

    all_keys = [key for keys in written for key in keys]
    assert len(all_keys) == len(set(all_keys))
    # The follower saw every segment exactly once, though some landed behind its watermark.
    assert Counter(seg.key for seg in handed_out) == Counter(all_keys)
    assert late > 0, "the test never produced an out-of-order upload; it proves nothing"
    # Every event is in exactly one segment; sequence ranges tile each producer without gaps.
    event_ids: Counter[str] = Counter()
    by_producer: dict[str, list[SegmentInfo]] = {}
    for seg in reader.list_all():
        data = store.get(seg.key)
        assert checksum(data) == seg.checksum  # nothing was overwritten after the key was written
        lines = list(reader.read_lines(seg.key))
        assert len(lines) == seg.lines
        event_ids.update(orjson.loads(line)["event_id"] for line in lines)
        by_producer.setdefault(seg.producer, []).append(seg)
    assert len(event_ids) == 100_000 and set(event_ids.values()) == {1}
    for producer, segments in by_producer.items():
        ranges = sorted((s.first_seq, s.last_seq) for s in segments)
        assert ranges[0][0] == 0 and ranges[-1][1] == 24_999, producer
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False)), producer


def _open(spec: dict[str, object]) -> ObjectStore:
    from tests.conftest import open_store

    return open_store(spec)


@pytest.mark.integration
def test_a_truncated_or_altered_segment_is_detected(tmp_path: Path) -> None:
    store = ObjectStore.local(tmp_path / "store")
    with LogWriter(store, "victim", background_flush=False) as writer:
        for i in range(2000):
            writer.append({**_event(i), "payload": f"text {i}" * 5})
    (seg,) = LogReader(store).list_all()
    path = tmp_path / "store" / seg.key
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a store that lost the object's tail
    with pytest.raises(CorruptSegment, match="checksum"):
        list(LogReader(store).read_lines(seg.key))
    for position in (0, 4, 6):  # the frame's magic number, its descriptor, its first block header
        altered = bytearray(data)
        altered[position] ^= 0xFF
        path.write_bytes(bytes(altered))
        with pytest.raises(CorruptSegment, match="does not decompress"):
            list(LogReader(store).read_lines(seg.key))


KEY = SecretStr("k3y-of-the-log")


@pytest.mark.integration
def test_with_a_signing_key_only_segments_the_writer_signed_under_it_are_read(tmp_path: Path) -> None:
    from agentlake.log.segments import with_signature

    store = ObjectStore.local(tmp_path / "store")
    with LogWriter(store, "signer", background_flush=False, signing_key=KEY) as writer:
        writer.append(_event(1))
    with LogWriter(store, "plain", background_flush=False) as plain:
        plain.append(_event(2))
    with LogWriter(store, "other", background_flush=False, signing_key=SecretStr("another-key")) as other:
        other.append(_event(3))
    signed, unsigned, foreign = writer.stats.sealed[0], plain.stats.sealed[0], other.stats.sealed[0]
    assert signed.signature is not None and unsigned.signature is None and signed.unsigned_key != signed.key
    assert SegmentInfo.from_key(signed.key) == SegmentInfo(**{**vars(signed), "size": None})
    checked = LogReader(store, signing_key=KEY)
    assert [orjson.loads(line)["event_id"] for line in checked.read_lines(signed.key)] == ["e1"]
    with pytest.raises(ForgedSegment, match="carries no signature"):
        list(checked.read_lines(unsigned.key))
    with pytest.raises(ForgedSegment, match="does not match"):
        list(checked.read_lines(foreign.key))
    # Someone with write access copies a signed key's signature onto other bytes: valid checksum, wrong signature.
    forged_bytes = zstandard.ZstdCompressor(level=3).compress(orjson.dumps(_event(4)) + b"\n")
    forged = with_signature(
        segment_key(arrival=signed.arrival, producer="forger0123456789", first_seq=0, lines=1,
                    digest=checksum(forged_bytes)), signed.signature)
    store.put_once(forged, forged_bytes)
    with pytest.raises(ForgedSegment, match="does not match"):
        list(checked.read_lines(forged))
    # A retired key still verifies what it signed; without a key everything reads as before.
    assert list(LogReader(store, signing_key=KEY, previous_keys=(SecretStr("another-key"),)).read_lines(foreign.key))
    assert all(list(LogReader(store).read_lines(s.key)) for s in (signed, unsigned, foreign))
    assert list(LogReader(store).read_lines(forged))


@pytest.mark.integration
def test_with_a_signing_key_emit_demo_and_the_otlp_import_write_signed_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from agentlake.cli import main
    from tests.otlp_collector import collector_json, simulate_agent_run, write_export

    monkeypatch.setenv("AGENTLAKE_SIGNING_KEY", KEY.get_secret_value())
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(_event(i)) + b"\n" for i in range(3)) + b"{not json\n")
    export = write_export(tmp_path / "traces", [collector_json(simulate_agent_run().spans)])
    for command in (["emit", str(events)], ["demo", "--runs", "2", "--seed", "3"], ["import-otlp", str(export)]):
        assert main(command) == 0, command
    capsys.readouterr()
    assert main(["log", "ls", "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)["segments"]
    assert {row["producer"][:4] for row in listed} == {"emit", "demo", "otlp"}
    assert all(row["signed"] for row in listed)
    reader = LogReader(ObjectStore.local(Settings.from_env().store_root), signing_key=KEY)
    assert sum(len(list(reader.read_lines(row["key"]))) for row in listed) == sum(row["lines"] for row in listed)


@pytest.mark.unit
def test_after_a_key_rotation_what_the_retired_key_signed_verifies_only_while_it_is_listed(tmp_path: Path) -> None:
    from agentlake.storage.signing import record_problem, signed
    from agentlake.tables.lake import Lake

    store = ObjectStore.local(tmp_path / "store")
    with LogWriter(store, "before", background_flush=False, signing_key=SecretStr("old-key")) as writer:
        writer.append(_event(1))
    old_segment, old_record = writer.stats.sealed[0], signed(SecretStr("old-key"), {"what": "a pin"})
    rotated = Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_SIGNING_KEY": "new-key",
                                 "AGENTLAKE_SIGNING_KEYS_PREVIOUS": " older-key , old-key"})
    assert [k.get_secret_value() for k in rotated.previous_signing_keys] == ["older-key", "old-key"]
    assert record_problem(rotated, old_record) is None
    assert list(Lake(rotated, store=store).log.read_lines(old_segment.key))
    # Nothing new is signed with a retired key, and once it is no longer listed its records are forged.
    assert signed(rotated.signing_key, {"what": "a pin"}) != old_record
    dropped = rotated.model_copy(update={"signing_keys_previous": None})
    assert record_problem(dropped, old_record) is not None
    with pytest.raises(ForgedSegment, match="does not match"):
        list(Lake(dropped, store=store).log.read_lines(old_segment.key))


@pytest.mark.integration
def test_a_restarted_producer_with_a_fixed_name_loses_no_event(tmp_path: Path) -> None:
    from agentlake.pipeline.ingest import ingest_pending
    from agentlake.pipeline.reconcile import reconcile
    from agentlake.tables.lake import Lake

    lake = Lake(Settings(home=tmp_path / "home"))
    moment = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    keys = []
    for boot in range(2):  # the same name, the same clock, sequence numbers from 0 again
        with LogWriter(lake.store, "pins", background_flush=False, clock=lambda: moment) as writer:
            for i in range(3):
                writer.append(_event(10 * boot + i))
        keys.append(writer.stats.sealed[0].key)
    first, second = (SegmentInfo.from_key(k) for k in keys)
    assert first.producer != second.producer and first.producer.startswith("pins")
    assert (first.first_seq, second.first_seq) == (0, 0)
    report = ingest_pending(lake)
    assert (report.segments, report.rows, report.duplicates) == (2, 6, 0)
    assert all(day.balanced for day in reconcile(lake))


@pytest.mark.unit
@pytest.mark.parametrize("name", ["", "Has-Caps", "with space", "x" * 29, "dots.dots", "ünïcode"])
def test_a_writer_refuses_a_bad_producer_name_before_accepting_any_event(tmp_path: Path, name: str) -> None:
    from agentlake.errors import InvalidProducer

    with pytest.raises(InvalidProducer, match="producer name"):
        LogWriter(ObjectStore.local(tmp_path), name, background_flush=False)


def _put_segment(store: ObjectStore, body: bytes, lines: int, producer: str = "hostile0123456789ab") -> str:
    data = zstandard.ZstdCompressor(level=3).compress(body)
    key = segment_key(arrival=datetime(2026, 11, 26, 7, 0, tzinfo=UTC), producer=producer[:40], first_seq=0,
                      lines=lines, digest=checksum(data))
    store.put_once(key, data)
    return key


@pytest.mark.integration
def test_a_line_longer_than_the_bound_is_never_held_and_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    from agentlake.errors import InvalidEvent
    from agentlake.log.events import parse_event_line

    store = ObjectStore.local(tmp_path)
    good = orjson.dumps(_event(1))
    huge = b"x" * 300_000  # no newline for 300 kB
    key = _put_segment(store, good + b"\n" + huge + b"\n" + good + b"\n", 3)
    reader = LogReader(store, max_line_bytes=10_000)
    lines = list(reader.read_lines(key))
    assert len(lines) == 3 and lines[0] == good == lines[2]
    assert len(lines[1]) < 2_000  # the mark and the line's first bytes, not the line
    with pytest.raises(InvalidEvent, match="line of 300000 bytes is longer than"):
        parse_event_line(lines[1])
    # A line written to look like the mark is only a bad line: the mark's token is this process's own.
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_event_line(b"\x00agentlake-oversized-line-0000000000000000:5:xxxxx")


@pytest.mark.integration
def test_a_compressed_bomb_stops_at_the_inflated_bound_without_holding_it(tmp_path: Path) -> None:

    store = ObjectStore.local(tmp_path)
    key = _put_segment(store, b"\0" * (200 * 1024 * 1024), 1)  # 200 MiB of one line, a few kB on disk
    assert (tmp_path / key).stat().st_size < 100_000
    from tests.platform import run_with_peak

    message, peak_mb = run_with_peak(
        "import sys; from agentlake.log.reader import LogReader; from agentlake.storage.store import ObjectStore\n"
        "reader = LogReader(ObjectStore.local(sys.argv[1]), max_inflated_bytes=32 * 1024 * 1024)\n"
        "try:\n    for _ in reader.iter_chunks(sys.argv[2]):\n        pass\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, exc)", str(tmp_path), key)
    assert message.startswith("OversizedSegment") and "inflates to more than" in message
    assert peak_mb < 200, f"reading the 200 MiB bomb peaked at {peak_mb} MB"


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(6))
def test_lines_come_out_whole_or_as_their_oversized_mark_however_the_bytes_are_cut(tmp_path: Path,
                                                                                   seed: int) -> None:
    import random

    from agentlake.errors import InvalidEvent
    from agentlake.log.events import parse_event_line

    rng = random.Random(seed)
    lines = [bytes([97 + rng.randrange(26)]) * rng.choice([0, 1, 5, 40, 99, 100, 101, 250, 1000])
             for _ in range(300)]
    store = ObjectStore.local(tmp_path)
    key = _put_segment(store, b"".join(line + b"\n" for line in lines), len(lines))
    reader = LogReader(store, max_line_bytes=100)
    got = [line for _, run in reader.iter_chunks(key, chunk_bytes=rng.choice([7, 64, 333, 4096]))
           for line in run[:-1].split(b"\n")]
    assert len(got) == len(lines)
    for want, line in zip(lines, got, strict=True):
        if len(want) <= 100:
            assert line == want
        else:
            with pytest.raises(InvalidEvent, match=f"line of {len(want)} bytes"):
                parse_event_line(line)
            assert want[:50] in line


@pytest.mark.integration
def test_a_producer_clock_running_ahead_never_moves_the_cursor_past_honest_segments(store: ObjectStore) -> None:
    now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)

    def write_at(moment: datetime, name: str) -> SegmentInfo:
        with LogWriter(store, name, background_flush=False, clock=lambda: moment) as w:
            w.append(_event(0))
        return w.stats.sealed[0]

    reader = LogReader(store, lookback_s=600)
    fast = write_at(now + timedelta(hours=1), "fastclock")
    far = write_at(datetime(2099, 1, 1, tzinfo=UTC), "stamped2099")
    honest = write_at(now, "honest")
    new, cursor = reader.poll(LogCursor(), now=now)
    assert [s.key for s in new] == [honest.key]
    assert cursor.watermark == now
    assert {s.key for s in reader.future(now=now)} == {fast.key, far.key}
    late = write_at(now - timedelta(minutes=8), "slowupload")  # sealed earlier, landed later
    new, cursor = reader.poll(cursor, now=now + timedelta(minutes=1))
    assert [s.key for s in new] == [late.key]
    # Once its time comes, the fast producer's segment is handed out, once.
    new, cursor = reader.poll(cursor, now=now + timedelta(minutes=60))
    assert [s.key for s in new] == [fast.key]
    assert reader.poll(cursor, now=now + timedelta(minutes=61))[0] == []
