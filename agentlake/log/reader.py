"""The log reader: lists the segments that arrived after a cursor, and reads them.

A slow producer's upload can land after a faster one's with an earlier arrival time in its
key, so the cursor re-lists a lookback window and remembers which keys in that window it has
already handed out.

With a signing key, a segment is read only if its key carries a signature (checked before any byte
is read), and its bytes are handed out as AgentLake's only if that signature matches its key and
content (checked with the checksum, once the segment is read): otherwise ``ForgedSegment``, and
ingestion holds the segment as a whole, as it does a corrupt one.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from pydantic import SecretStr

from agentlake.errors import CorruptSegment, ForgedSegment, InvalidSegmentKey, OversizedSegment
from agentlake.log.events import OVERSIZED_HEAD_BYTES, oversized_line
from agentlake.log.segments import LOG_PREFIX, SegmentInfo, day_prefix, key_floor
from agentlake.storage.signing import segment_signature_problem
from agentlake.storage.store import ObjectStore

DEFAULT_LOOKBACK_S = 600.0
# How far ahead of the reader's clock a segment's arrival may be and still be handed out. With the
# writers' upload lag (300 s) it must stay inside the lookback (600 s), or a late honest upload
# could land behind the cursor's horizon.
MAX_FUTURE_S = 60.0
# What one segment may inflate to, and one line's length. The SDK seals a segment at 8 MiB of
# lines, so an honest segment is far below both; a compressed bomb stops here, not in memory.
DEFAULT_MAX_INFLATED_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

LINE_BATCH_SCHEMA = pa.schema(
    [pa.field("line_offset", pa.int64(), nullable=False), pa.field("line", pa.large_binary(), nullable=False)]
)


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
        signing_key: ``AGENTLAKE_SIGNING_KEY``; when given, only segments signed with it (or with one of
            ``previous_keys``, retired keys still accepted) are read.
    """

    def __init__(self, store: ObjectStore, *, prefix: str = LOG_PREFIX, lookback_s: float = DEFAULT_LOOKBACK_S,
                 max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, signing_key: SecretStr | None = None,
                 previous_keys: tuple[SecretStr, ...] = ()) -> None:
        self.store = store
        self.signing_key = signing_key
        self.previous_keys = previous_keys
        self.prefix = prefix
        self.lookback = timedelta(seconds=lookback_s)
        self.max_inflated_bytes = max_inflated_bytes
        self.max_line_bytes = max_line_bytes

    def _segments(self, prefix: str, after: str | None = None) -> list[SegmentInfo]:
        """The segments under ``prefix``; an object that is no segment is passed over (see :meth:`strays`)."""
        found = []
        for obj in self.store.list(prefix, after=after):
            try:
                found.append(SegmentInfo.from_key(obj.key, size=obj.size))
            except InvalidSegmentKey:
                continue  # not the log writer's: never ingested, named by reconcile
        return found

    def strays(self, day: str | None = None) -> list[tuple[str, str]]:
        """Objects in the log (or in one arrival day's folder) that are no segment: ``(key, reason)``.

        Only the log writer writes there; anything else is left in place, never ingested, and named.
        """
        prefix = day_prefix(day, self.prefix) if day else self.prefix + "/"
        out = []
        for obj in self.store.list(prefix):
            try:
                SegmentInfo.from_key(obj.key)
            except InvalidSegmentKey as exc:
                out.append((obj.key, f"{obj.size} bytes, {exc}"))
        return out

    def list_all(self) -> list[SegmentInfo]:
        """Every segment in the log, in key (arrival) order."""
        return self._segments(self.prefix + "/")

    def days(self) -> list[str]:
        """The arrival days (``YYYY-MM-DD``) the log holds segments for, oldest first, from the day
        folders alone (no segment is listed)."""
        found = [folder.rsplit("/dt=", 1)[-1] for folder in self.store.list_folders(self.prefix)]
        return sorted(day for day in found if _DAY.fullmatch(day))

    def list_day(self, day: str) -> list[SegmentInfo]:
        """Every segment that arrived on ``day`` (``YYYY-MM-DD``): one Dagster partition."""
        return self._segments(day_prefix(day, self.prefix))

    def poll(self, cursor: LogCursor, *, now: datetime | None = None) -> tuple[list[SegmentInfo], LogCursor]:
        """Segments not handed out before, in key order, and the cursor to pass next time.

        Never skips a segment that lands within ``lookback`` of the newest arrival seen,
        however late its upload, and never returns one twice. Arrival times come from producers'
        keys, so no key may move the cursor past the reader's own clock: a segment stamped more
        than ``MAX_FUTURE_S`` after ``now`` is held back until it is due (see :meth:`future`);
        were it taken, the cursor would jump ahead and never hand out the honest segments that
        land behind it.
        """
        now = now or datetime.now(UTC)
        after = None
        if cursor.watermark is not None:
            after = key_floor(cursor.watermark - self.lookback, self.prefix)
        due = now + timedelta(seconds=MAX_FUTURE_S)
        listed = [seg for seg in self._segments(self.prefix + "/", after=after) if seg.arrival <= due]
        new = [seg for seg in listed if seg.key not in cursor.seen]
        watermark = max([seg.arrival for seg in listed] + ([cursor.watermark] if cursor.watermark else []), default=None)
        if watermark is None:
            return new, cursor
        horizon = watermark - self.lookback
        seen = frozenset(seg.key for seg in listed if seg.arrival >= horizon)
        return new, LogCursor(watermark=watermark, seen=seen)

    def future(self, *, now: datetime | None = None) -> list[SegmentInfo]:
        """Segments stamped too far ahead of ``now`` to be handed out yet (a producer's clock runs fast)."""
        due = (now or datetime.now(UTC)) + timedelta(seconds=MAX_FUTURE_S)
        return [seg for seg in self._segments(self.prefix + "/", after=key_floor(due, self.prefix))
                if seg.arrival > due]

    def read_bytes(
        self, key: str, piece_bytes: int = 4 * 1024 * 1024, compressed: Iterator[bytes] | None = None
    ) -> Iterator[bytes]:
        """The segment's NDJSON bytes, decompressed as a stream of pieces of at most ``piece_bytes``.

        Args:
            compressed: the object's bytes as already being read (see :class:`ReadAhead`);
                default: read from the store now.
        """
        info = _info(key)
        expected = info.checksum if info is not None else None
        if info is not None:
            self._check_signature(info, None)  # no signature at all: refused before a byte is read
        source = _ChunkSource(compressed if compressed is not None else self.store.stream(key))
        stream = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)  # type: ignore[arg-type]
        inflated = 0
        with stream as reader:
            while True:
                try:
                    piece = reader.read(piece_bytes)
                except zstandard.ZstdError as exc:  # bytes that are no zstd frame: altered or not a segment
                    raise CorruptSegment(
                        f"segment {key!r} does not decompress ({exc}): its bytes were altered or it is no "
                        "segment; it is held as a whole, its bytes stay in the log (restore it from a replica "
                        "or backup: the log is write-once)",
                        key,
                    ) from None
                if not piece:
                    break
                inflated += len(piece)
                if inflated > self.max_inflated_bytes:
                    raise OversizedSegment(
                        f"segment {key!r} inflates to more than {self.max_inflated_bytes} bytes "
                        "(AGENTLAKE_MAX_SEGMENT_INFLATED_BYTES); it is held as a whole, its bytes stay in the log",
                        key,
                    )
                yield piece
        # zstandard ends quietly on a truncated frame: the key's checksum catches that, and tampering.
        if expected is not None and source.digest() != expected:
            raise CorruptSegment(
                f"segment {key!r} does not match the checksum in its key (object changed or truncated); "
                "restore it from a replica or backup: the log is write-once",
                key,
            )
        if info is not None and self.signing_key is not None:
            self._check_signature(info, source.sha256())

    def verify_signature(self, info: SegmentInfo, *, read: bool) -> None:
        """Check that ``info`` is AgentLake's under the signing key (nothing to check without one).

        Args:
            read: also read the segment, to check its signature against its bytes; otherwise only
                that its key carries one (no request).

        Raises:
            ForgedSegment: it carries no signature, or (read) one that does not match.
            CorruptSegment: (read) its bytes miss the checksum in its key.
        """
        if self.signing_key is None:
            return
        self._check_signature(info, None)
        if read:
            for _piece in self.read_bytes(info.key):
                pass

    def _check_signature(self, info: SegmentInfo, sha256: str | None) -> None:
        problem = segment_signature_problem(self.signing_key, info.unsigned_key, info.signature, sha256,
                                            self.previous_keys)
        if problem is not None:
            raise ForgedSegment(
                f"segment {info.key!r} is not AgentLake's: {problem}; it is held as a whole, its bytes stay in the "
                "log (a producer's events must be written again through LogWriter with the signing key)",
                info.key,
            )

    def iter_chunks(
        self, key: str, chunk_bytes: int = 16 * 1024 * 1024, compressed: Iterator[bytes] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """The segment as runs of whole lines: ``(offset of the first line, bytes)``.

        Each run ends at a line boundary and holds about ``chunk_bytes``; memory stays bounded
        whatever the segment's size. A line longer than ``max_line_bytes`` is never held: it
        stands in the run as an oversized-line mark (:func:`agentlake.log.events.oversized_line`),
        its length and first bytes, which ingestion quarantines with the reason.
        """
        pending = bytearray()
        offset = 0
        tail = 0  # length of the line at the end of ``pending`` that has no newline yet
        skipped: list[Any] | None = None  # [length, head] of an oversized line being passed over
        for piece in self.read_bytes(key, min(chunk_bytes, 4 * 1024 * 1024), compressed):
            if skipped is not None:
                end = piece.find(b"\n")
                if end < 0:
                    skipped[0] += len(piece)
                    continue
                pending += oversized_line(skipped[0] + end, skipped[1]) + b"\n"
                piece = piece[end + 1:]
                skipped = None
            piece, tail = self._bounded_lines(piece, tail, pending)
            pending += piece
            if tail > self.max_line_bytes:  # the last line outgrew the bound: keep its head, drop the rest
                start = len(pending) - tail
                skipped = [tail, bytes(pending[start:start + OVERSIZED_HEAD_BYTES])]
                del pending[start:]
                tail = 0
            while len(pending) >= chunk_bytes:
                cut = pending.rfind(b"\n", 0, chunk_bytes) + 1 or pending.find(b"\n") + 1
                if cut == 0:
                    break  # one line longer than a chunk: wait for its end
                run = bytes(pending[:cut])
                del pending[:cut]
                yield offset, run
                offset += run.count(b"\n")
        if skipped is not None:
            pending += oversized_line(skipped[0], skipped[1])
        if pending:
            if not pending.endswith(b"\n"):
                pending += b"\n"
            yield offset, bytes(pending)

    def _bounded_lines(self, piece: bytes, tail: int, pending: bytearray) -> tuple[bytes, int]:
        """``piece`` with each complete line longer than the bound replaced by its mark; the new tail length.

        A line that began in ``pending`` (``tail`` bytes so far) and ends in ``piece`` is cut out of
        ``pending`` when too long. Vectorised: the common piece, all lines short, costs one scan.
        """
        ends = np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10)
        if not len(ends):
            return piece, tail + len(piece)
        lengths = np.diff(ends, prepend=-1) - 1
        lengths[0] += tail
        new_tail = len(piece) - int(ends[-1]) - 1
        if int(lengths.max()) <= self.max_line_bytes:
            return piece, new_tail
        out = bytearray()
        start = 0
        for index in np.flatnonzero(lengths > self.max_line_bytes):
            end = int(ends[index])
            line_start = int(ends[index - 1]) + 1 if index > 0 else 0
            out += piece[start:line_start]
            head = piece[line_start:end]
            if index == 0 and tail:  # the line began in pending: take its head from there
                begun = len(pending) - tail
                head = bytes(pending[begun:]) + head
                del pending[begun:]
            out += oversized_line(int(lengths[index]), head[:OVERSIZED_HEAD_BYTES])
            start = end
        out += piece[start:]
        return bytes(out), new_tail

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
        return self.sha256()[:16]

    def sha256(self) -> str:
        """The full sha256 of every byte, once the source is exhausted (what a segment's signature covers)."""
        for rest in self._chunks:
            self._sha.update(rest)
        return self._sha.hexdigest()

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


def _info(key: str) -> SegmentInfo | None:
    try:
        return SegmentInfo.from_key(key)
    except InvalidSegmentKey:
        return None


def split_lines(run: bytes) -> pa.LargeBinaryArray:
    """Split a run of newline-terminated lines into an Arrow array, without Python objects per line."""
    body = run[:-1] if run.endswith(b"\n") else run
    parts = pc.split_pattern(pa.array([body], pa.large_binary()), pattern=b"\n")
    return parts.flatten()
