"""The raw event log: the producer SDK that writes segments and the reader that lists and reads them.

Writer: events are buffered, and a segment is sealed when the buffer reaches a size, a
count or an age; it is compressed (NDJSON + zstd) and written once under a key that sorts
by arrival time. A crashed producer loses at most its unflushed buffer.

Reader: lists the segments that arrived after a cursor. A slow producer's upload can land
after a faster one's with an earlier arrival time in its key, so the cursor re-lists a
lookback window and remembers which keys in that window it has already handed out.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from agentlake.errors import AlreadyExists, CorruptSegment, InvalidSegmentKey, SegmentConflict
from agentlake.events import encode_event
from agentlake.segments import (
    LOG_PREFIX,
    SEGMENT_SUFFIX,
    SegmentInfo,
    checksum,
    day_prefix,
    key_floor,
    segment_key,
)
from agentlake.store import ObjectStore

# Defaults of the producer SDK (documented in the README).
DEFAULT_MAX_SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SEGMENT_EVENTS = 50_000
DEFAULT_MAX_SEGMENT_AGE_S = 5.0
DEFAULT_LOOKBACK_S = 600.0
# A segment not uploaded within this time gets a fresh arrival time, so that it still
# lands inside every reader's lookback window.
DEFAULT_MAX_UPLOAD_LAG_S = DEFAULT_LOOKBACK_S / 2
ZSTD_LEVEL = 3

LINE_BATCH_SCHEMA = pa.schema(
    [pa.field("line_offset", pa.int64(), nullable=False), pa.field("line", pa.large_binary(), nullable=False)]
)


def new_producer_id(name: str = "p") -> str:
    """A producer id unique to this writer: a readable name plus 48 random bits."""
    clean = "".join(ch for ch in name.lower() if ch.isalnum())[:24] or "p"
    return f"{clean}{secrets.token_hex(6)}"


@dataclass
class WriterStats:
    segments: int = 0
    events: int = 0
    bytes_raw: int = 0
    bytes_stored: int = 0
    sealed: list[SegmentInfo] = field(default_factory=list)


class LogWriter:
    """The producer SDK: ``append`` events, and they land in write-once log segments.

    Thread-safe. Use as a context manager, or call ``close()``: it flushes the buffer.

    Args:
        store: the object store holding the log.
        producer: this writer's producer id (default: a new unique one).
        max_segment_bytes / max_segment_events / max_segment_age_s: seal thresholds.
        background_flush: seal aged buffers from a timer thread, not only on append.
    """

    def __init__(
        self,
        store: ObjectStore,
        producer: str | None = None,
        *,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        max_segment_events: int = DEFAULT_MAX_SEGMENT_EVENTS,
        max_segment_age_s: float = DEFAULT_MAX_SEGMENT_AGE_S,
        max_upload_lag_s: float = DEFAULT_MAX_UPLOAD_LAG_S,
        background_flush: bool = True,
        prefix: str = LOG_PREFIX,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.producer = producer or new_producer_id()
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_events = max_segment_events
        self.max_segment_age_s = max_segment_age_s
        self.max_upload_lag_s = max_upload_lag_s
        self.prefix = prefix
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._lines: list[bytes] = []
        self._bytes = 0
        self._opened_at = 0.0
        self._next_seq = 0
        self._closed = False
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.stats = WriterStats()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if background_flush and max_segment_age_s > 0:
            self._flusher = threading.Thread(target=self._flush_aged, name=f"agentlake-flush-{self.producer}", daemon=True)
            self._flusher.start()

    def append(self, event: Mapping[str, Any]) -> int:
        """Append one event; returns its sequence number within this producer."""
        return self._add(encode_event(event))  # JSON escapes newlines: one event, one line

    def append_line(self, line: bytes | str) -> int:
        """Append one NDJSON line as it is, valid or not: ingestion validates and quarantines.

        A line holding newlines is split: the log's unit is the line.
        """
        if type(line) is bytes and b"\n" not in line:  # the common case, kept cheap
            return self._add(line)
        data = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else bytes(line)
        if data.endswith(b"\n"):
            data = data[:-1]
        seq = -1
        for part in data.split(b"\n"):
            seq = self._add(part)
        return seq

    def _add(self, data: bytes) -> int:
        with self._lock:
            if self._closed:
                raise RuntimeError("this LogWriter is closed; create a new one to append")
            lines = self._lines
            if not lines:
                self._opened_at = time.monotonic()
            lines.append(data)
            self._bytes += len(data) + 1
            seq = self._next_seq
            self._next_seq = seq + 1
            if self._bytes < self.max_segment_bytes and len(lines) < self.max_segment_events:
                return seq
            batch = self._take()
        if batch is not None:
            self._upload(*batch)
        return seq

    def flush(self) -> SegmentInfo | None:
        """Seal and write whatever is buffered now; returns the segment, if there was one."""
        with self._lock:
            batch = self._take()
        return self._upload(*batch) if batch is not None else None

    def close(self) -> None:
        """Flush the buffer and stop the timer thread. Appending after close raises."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._lock:
            self._closed = True

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self) -> tuple[int, list[bytes]] | None:
        """Detach the buffer with its first sequence number (caller holds the lock)."""
        if not self._lines:
            return None
        lines, self._lines = self._lines, []
        first_seq = self._next_seq - len(lines)
        self._bytes = 0
        return first_seq, lines

    def _flush_aged(self) -> None:
        interval = min(1.0, max(0.05, self.max_segment_age_s / 4))
        while not self._stop.wait(interval):
            with self._lock:
                aged = self._lines and time.monotonic() - self._opened_at >= self.max_segment_age_s
                batch = self._take() if aged else None
            if batch is not None:
                self._upload(*batch)

    def _upload(self, first_seq: int, lines: list[bytes]) -> SegmentInfo:
        lines.append(b"")  # so the join ends with a newline, without copying the segment twice
        raw = b"\n".join(lines)
        count = len(lines) - 1
        with self._upload_lock:  # one compressor, one upload at a time per producer
            data = self._compressor.compress(raw)
        digest = checksum(data)
        sealed = time.monotonic()
        arrival = self._clock()
        attempt = 0
        while True:
            key = segment_key(
                arrival=arrival, producer=self.producer, first_seq=first_seq, lines=count, digest=digest,
                prefix=self.prefix,
            )
            try:
                self.store.put_once(key, data)
                break
            except AlreadyExists:
                # A retried put whose first attempt succeeded: same key, same bytes, done.
                if self.store.get(key) != data:
                    raise SegmentConflict(
                        f"segment {key!r} exists with other content; producer id {self.producer!r} "
                        "is used by two writers: give each writer its own id"
                    ) from None
                break
            except Exception:
                attempt += 1
                if attempt >= 8:
                    raise
                time.sleep(min(5.0, 0.1 * 2**attempt))
                if time.monotonic() - sealed > self.max_upload_lag_s:
                    arrival = self._clock()  # re-stamp: stay inside readers' lookback
        info = SegmentInfo.from_key(key, size=len(data))
        with self._lock:
            self.stats.segments += 1
            self.stats.events += count
            self.stats.bytes_raw += len(raw)
            self.stats.bytes_stored += len(data)
            self.stats.sealed.append(info)
        return info


@dataclass(frozen=True)
class LogCursor:
    """Where a reader is in the log: the newest arrival seen, and the keys already seen near it."""

    watermark: datetime | None = None
    seen: frozenset[str] = frozenset()

    def to_json(self) -> str:
        return orjson.dumps(
            {"watermark": self.watermark.isoformat() if self.watermark else None, "seen": sorted(self.seen)}
        ).decode()

    @classmethod
    def from_json(cls, text: str | None) -> LogCursor:
        if not text:
            return cls()
        data = orjson.loads(text)
        mark = data.get("watermark")
        return cls(
            watermark=datetime.fromisoformat(mark) if mark else None,
            seen=frozenset(data.get("seen") or ()),
        )


class LogReader:
    """Lists and reads log segments.

    Args:
        store: the object store holding the log.
        lookback_s: how far behind the newest arrival a late upload may land and still be
            found by ``poll``; it must exceed the writers' upload lag (default 600 s vs 300 s).
    """

    def __init__(self, store: ObjectStore, *, prefix: str = LOG_PREFIX, lookback_s: float = DEFAULT_LOOKBACK_S) -> None:
        self.store = store
        self.prefix = prefix
        self.lookback = timedelta(seconds=lookback_s)

    def _segments(self, prefix: str, after: str | None = None) -> list[SegmentInfo]:
        found = []
        for obj in self.store.list(prefix, after=after):
            if obj.key.endswith(SEGMENT_SUFFIX):
                found.append(SegmentInfo.from_key(obj.key, size=obj.size))
        return found

    def list_all(self) -> list[SegmentInfo]:
        """Every segment in the log, in key (arrival) order."""
        return self._segments(self.prefix + "/")

    def list_day(self, day: str) -> list[SegmentInfo]:
        """Every segment that arrived on ``day`` (``YYYY-MM-DD``): one Dagster partition."""
        return self._segments(day_prefix(day, self.prefix))

    def poll(self, cursor: LogCursor) -> tuple[list[SegmentInfo], LogCursor]:
        """Segments not handed out before, in key order, and the cursor to pass next time.

        Never skips a segment that lands within ``lookback`` of the newest arrival seen,
        however late its upload, and never returns one twice.
        """
        after = None
        if cursor.watermark is not None:
            after = key_floor(cursor.watermark - self.lookback, self.prefix)
        listed = self._segments(self.prefix + "/", after=after)
        new = [seg for seg in listed if seg.key not in cursor.seen]
        watermark = max([seg.arrival for seg in listed] + ([cursor.watermark] if cursor.watermark else []), default=None)
        if watermark is None:
            return new, cursor
        horizon = watermark - self.lookback
        seen = frozenset(seg.key for seg in listed if seg.arrival >= horizon)
        return new, LogCursor(watermark=watermark, seen=seen)

    def read_bytes(
        self, key: str, piece_bytes: int = 4 * 1024 * 1024, compressed: Iterator[bytes] | None = None
    ) -> Iterator[bytes]:
        """The segment's NDJSON bytes, decompressed as a stream of pieces of at most ``piece_bytes``.

        Args:
            compressed: the object's bytes as already being read (see :class:`ReadAhead`);
                default: read from the store now.
        """
        expected = _expected_checksum(key)
        source = _ChunkSource(compressed if compressed is not None else self.store.stream(key))
        stream = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)  # type: ignore[arg-type]
        with stream as reader:
            while True:
                piece = reader.read(piece_bytes)
                if not piece:
                    break
                yield piece
        # zstandard ends quietly on a truncated frame: the key's checksum catches that, and tampering.
        if expected is not None and source.digest() != expected:
            raise CorruptSegment(
                f"segment {key!r} does not match the checksum in its key (object changed or truncated); "
                "restore it from a replica or backup: the log is write-once"
            )

    def iter_chunks(
        self, key: str, chunk_bytes: int = 16 * 1024 * 1024, compressed: Iterator[bytes] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """The segment as runs of whole lines: ``(offset of the first line, bytes)``.

        Each run ends at a line boundary and holds about ``chunk_bytes``; memory stays bounded
        whatever the segment's size.
        """
        pending = bytearray()
        offset = 0
        for piece in self.read_bytes(key, min(chunk_bytes, 4 * 1024 * 1024), compressed):
            pending += piece
            while len(pending) >= chunk_bytes:
                cut = pending.rfind(b"\n", 0, chunk_bytes) + 1 or pending.find(b"\n") + 1
                if cut == 0:
                    break  # one line longer than a chunk: wait for its end
                run = bytes(pending[:cut])
                del pending[:cut]
                yield offset, run
                offset += run.count(b"\n")
        if pending:
            if not pending.endswith(b"\n"):
                pending += b"\n"
            yield offset, bytes(pending)

    def iter_batches(self, key: str, chunk_bytes: int = 16 * 1024 * 1024) -> Iterator[pa.RecordBatch]:
        """The segment as Arrow record batches of ``(line_offset, line)``, streamed."""
        for first, run in self.iter_chunks(key, chunk_bytes):
            lines = split_lines(run)
            offsets = pa.array(range(first, first + len(lines)), pa.int64())
            yield pa.RecordBatch.from_arrays([offsets, lines], schema=LINE_BATCH_SCHEMA)

    def read_lines(self, key: str) -> Iterator[bytes]:
        """Each line of the segment exactly as it was written, without its newline."""
        for _, run in self.iter_chunks(key):
            yield from run[:-1].split(b"\n")


class ReadAhead:
    """Reads the next segments while the current one is parsed, so the store's latency overlaps.

    Up to ``depth`` segments ahead are fetched on background threads, each up to ``buffer_bytes``
    of its compressed bytes; the rest of a larger segment streams as it is consumed, so memory
    stays bounded by ``depth * buffer_bytes``. A failed fetch raises when its segment is read.

    Args:
        reader: the log.
        keys: the segments, in the order they will be read.
    """

    def __init__(
        self, reader: LogReader, keys: list[str], *, depth: int = 4, buffer_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self._reader = reader
        self._keys = list(keys)
        self._depth = depth
        self._buffer_bytes = buffer_bytes
        self._next = 0
        self._fetches: dict[str, Future[tuple[list[bytes], Iterator[bytes]]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, depth), thread_name_prefix="agentlake-read-ahead")
        if depth < 1:
            self._pool.shutdown(wait=False)  # nothing is read ahead: each segment is read when its turn comes

    def iter_chunks(self, key: str, chunk_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[int, bytes]]:
        """:meth:`LogReader.iter_chunks` of ``key``, from what was read ahead."""
        self._start()
        fetch = self._fetches.pop(key, None)
        self._start()
        if self._next >= len(self._keys) and not self._fetches:
            self._pool.shutdown(wait=False)  # the last segment: no more fetches to start
        if fetch is None:
            yield from self._reader.iter_chunks(key, chunk_bytes)
            return
        head, rest = fetch.result()
        yield from self._reader.iter_chunks(key, chunk_bytes, itertools.chain(head, rest))

    def close(self) -> None:
        """Stop fetching (fetches in flight finish in the background, unread)."""
        self._fetches.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        while self._next < len(self._keys) and len(self._fetches) < self._depth:
            key = self._keys[self._next]
            self._next += 1
            self._fetches[key] = self._pool.submit(self._fetch, key)

    def _fetch(self, key: str) -> tuple[list[bytes], Iterator[bytes]]:
        stream = self._reader.store.stream(key, chunk_size=min(self._buffer_bytes, 4 * 1024 * 1024))
        head: list[bytes] = []
        size = 0
        while size < self._buffer_bytes:
            chunk = next(stream, None)
            if chunk is None:
                break
            head.append(chunk)
            size += len(chunk)
        return head, stream


class _ChunkSource:
    """A file-like ``read`` over an iterator of byte chunks, for zstandard's stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._sha = hashlib.sha256()

    def digest(self) -> str:
        """The checksum of every byte read, once the source is exhausted (as in a segment key)."""
        for rest in self._chunks:
            self._sha.update(rest)
        return self._sha.hexdigest()[:16]

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            nxt = next(self._chunks, None)
            if nxt is None:
                break
            self._sha.update(nxt)
            self._buffer += nxt
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _expected_checksum(key: str) -> str | None:
    try:
        return SegmentInfo.from_key(key).checksum
    except InvalidSegmentKey:
        return None


def split_lines(run: bytes) -> pa.LargeBinaryArray:
    """Split a run of newline-terminated lines into an Arrow array, without Python objects per line."""
    body = run[:-1] if run.endswith(b"\n") else run
    parts = pc.split_pattern(pa.array([body], pa.large_binary()), pattern=b"\n")
    return parts.flatten()
