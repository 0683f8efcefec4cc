"""The producer SDK: events are buffered and land in write-once log segments.

A segment is sealed when the buffer reaches a size, a count or an age; it is compressed
(NDJSON + zstd) and written once under a key that sorts by arrival time. A crashed producer
loses at most its unflushed buffer. With a signing key, the key carries the segment's signature
(see :mod:`agentlake.log.segments`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import zstandard
from pydantic import SecretStr

from agentlake.errors import AlreadyExists, InvalidProducer, SegmentConflict
from agentlake.log.events import encode_event
from agentlake.log.reader import DEFAULT_LOOKBACK_S
from agentlake.log.segments import LOG_PREFIX, SegmentInfo, segment_key, with_signature
from agentlake.storage.retry import DEFAULT_POLICY, is_transient, log_retry
from agentlake.storage.signing import segment_signature
from agentlake.storage.store import ObjectStore

# Defaults of the producer SDK (documented in the README).
DEFAULT_MAX_SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SEGMENT_EVENTS = 50_000
DEFAULT_MAX_SEGMENT_AGE_S = 5.0
# A segment not uploaded within this time gets a fresh arrival time, so that it still
# lands inside every reader's lookback window.
DEFAULT_MAX_UPLOAD_LAG_S = DEFAULT_LOOKBACK_S / 2
ZSTD_LEVEL = 3
_NAME_RE = re.compile(r"^[a-z0-9]{1,28}$")

# A producer's name (what the caller chooses) leaves room in the 40-character id for the nonce.
MAX_PRODUCER_NAME = 28
_NONCE_HEX = 12


def producer_name(text: str) -> str:
    """A valid producer name made from any text: its lowercase letters and digits (``p`` if none)."""
    return "".join(ch for ch in text.lower() if ch.isascii() and ch.isalnum())[:MAX_PRODUCER_NAME] or "p"


def new_producer_id(name: str = "p") -> str:
    """The id of one writer: its producer's name plus a nonce of 48 random bits, new for every writer.

    Two writers never share an id, even with the same name, in two processes or after a restart:
    each numbers its events from 0, and the log's keys and the tables' ledgers tell producers
    apart by id, so a restarted producer can never collide with its own earlier segments.

    Raises:
        InvalidProducer: ``name`` is not 1 to 28 lowercase letters or digits.
    """
    if not _NAME_RE.match(name):
        raise InvalidProducer(
            f"producer name {name!r} must be 1 to {MAX_PRODUCER_NAME} lowercase letters or digits "
            "(AgentLake adds a nonce of its own to make the producer id unique)"
        )
    return f"{name}{secrets.token_hex(_NONCE_HEX // 2)}"


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
        producer: the producer's name (default ``p``); the writer's id is the name plus a nonce of its own
            (:func:`new_producer_id`), so no two writers, and no writer after a restart, share an id.
        max_segment_bytes / max_segment_events / max_segment_age_s: seal thresholds.
        background_flush: seal aged buffers from a timer thread, not only on append.
        signing_key: ``AGENTLAKE_SIGNING_KEY``; when given, every segment's key carries its signature.
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
        signing_key: SecretStr | None = None,
    ) -> None:
        self.store = store
        self._signing_key = signing_key
        self.producer = new_producer_id("p" if producer is None else producer)  # refused here, before any event is accepted
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
        sha256 = hashlib.sha256(data).hexdigest()
        digest = sha256[:16]  # the checksum a key carries (agentlake.log.segments.checksum)
        sealed = time.monotonic()
        arrival = self._clock()
        attempt = 0
        while True:
            key = segment_key(
                arrival=arrival, producer=self.producer, first_seq=first_seq, lines=count, digest=digest,
                prefix=self.prefix,
            )
            if self._signing_key is not None:
                key = with_signature(key, segment_signature(self._signing_key, key, sha256))
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
            except Exception as exc:  # put_once gave up on the store, or an error waiting cannot cure
                attempt += 1
                if attempt >= DEFAULT_POLICY.upload_attempts or not is_transient(exc):
                    raise
                pause = min(DEFAULT_POLICY.write_max_backoff_s, DEFAULT_POLICY.write_first_backoff_s * 2**attempt)
                log_retry(f"uploading segment {key!r}", "the upload failed", exc, pause,
                          f"attempt {attempt} of {DEFAULT_POLICY.upload_attempts}")
                time.sleep(pause)
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
