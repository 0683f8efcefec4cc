"""Log segment keys: what a segment's key says about it, and how to build one.

A key sorts by arrival time and carries everything the log must know about a segment,
written atomically with it (a key cannot exist without its content):

    log/v1/dt=2026-11-26/hr=07/20261126T071512345678Z-p3f9a1c20b7-000000004000-0001000-9f86d081884c7d65.ndjson.zst
           arrival day   hour  arrival time (UTC)     producer    first seq    lines   sha256 of the object (64 bits)

With ``AGENTLAKE_SIGNING_KEY`` set, the writer adds ``-s<signature>`` before the suffix: 128 bits of
an HMAC of the rest of the key and of the object's full sha256
(:func:`agentlake.storage.signing.segment_signature`). It lives in the key so that a segment stays
one write-once object, written in one request, and a reader learns it from the listing it already
makes: checking it costs no request, only the hash it already computes for the checksum.

The events of a segment carry the producer's sequence numbers first_seq .. first_seq+lines-1
in line order, so order within a producer is kept and a gap between a producer's segments
shows a missing range.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from agentlake.errors import InvalidSegmentKey
from agentlake.storage.signing import SEGMENT_SIGNATURE_HEX

LOG_PREFIX = "log/v1"
SEGMENT_SUFFIX = ".ndjson.zst"
_TS_FORMAT = "%Y%m%dT%H%M%S%fZ"
_KEY_RE = re.compile(
    r"^(?P<prefix>.+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hr=(?P<hr>\d{2})/"
    r"(?P<ts>\d{8}T\d{12}Z)-(?P<producer>[a-z0-9]{1,40})-(?P<seq>\d{12})-(?P<lines>\d{7})-(?P<sha>[0-9a-f]{16})"
    rf"(?:-s(?P<sig>[0-9a-f]{{{SEGMENT_SIGNATURE_HEX}}}))?"
    + re.escape(SEGMENT_SUFFIX)
    + "$"
)
_PRODUCER_RE = re.compile(r"^[a-z0-9]{1,40}$")


@dataclass(frozen=True, order=True)
class SegmentInfo:
    """A sealed log segment, as its key describes it."""

    key: str
    arrival: datetime
    producer: str
    first_seq: int
    lines: int
    checksum: str
    size: int | None = None
    signature: str | None = None  # the HMAC its key carries, when it was written with a signing key

    @property
    def unsigned_key(self) -> str:
        """The key without its signature: what the signature covers, with the object's sha256."""
        if self.signature is None:
            return self.key
        return self.key[: -len(SEGMENT_SUFFIX) - len(self.signature) - 2] + SEGMENT_SUFFIX

    @property
    def dt(self) -> str:
        """The arrival day, ``YYYY-MM-DD``: the segment's Dagster partition key."""
        return self.arrival.strftime("%Y-%m-%d")

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.lines - 1

    @classmethod
    def from_key(cls, key: str, size: int | None = None) -> SegmentInfo:
        """Parse a segment key.

        Raises:
            InvalidSegmentKey: the key was not written by AgentLake's log writer.
        """
        match = _KEY_RE.match(key)
        if match is None:
            raise InvalidSegmentKey(
                f"{key!r} is not a segment key (expected {LOG_PREFIX}/dt=YYYY-MM-DD/hr=HH/"
                f"<arrival>-<producer>-<seq>-<lines>-<sha>{SEGMENT_SUFFIX}); only the log writer writes there"
            )
        arrival = datetime.strptime(match["ts"], _TS_FORMAT).replace(tzinfo=UTC)
        if match["dt"] != arrival.strftime("%Y-%m-%d") or match["hr"] != arrival.strftime("%H"):
            raise InvalidSegmentKey(f"{key!r}: its dt/hr folders do not match its arrival time")
        return cls(
            key=key,
            arrival=arrival,
            producer=match["producer"],
            first_seq=int(match["seq"]),
            lines=int(match["lines"]),
            checksum=match["sha"],
            size=size,
            signature=match["sig"],
        )


def checksum(data: bytes) -> str:
    """The segment checksum carried in its key: the first 64 bits of the object's sha256, in hex."""
    return hashlib.sha256(data).hexdigest()[:16]


def segment_key(
    *, arrival: datetime, producer: str, first_seq: int, lines: int, digest: str, prefix: str = LOG_PREFIX
) -> str:
    """Build the key of a segment sealed at ``arrival``."""
    if not _PRODUCER_RE.match(producer):
        raise ValueError(f"producer id {producer!r} must be 1-40 lowercase letters or digits")
    if not 0 < lines < 10_000_000:
        raise ValueError(f"a segment holds 1 to 9,999,999 lines, not {lines}")
    arrival = arrival.astimezone(UTC)
    return (
        f"{prefix}/dt={arrival:%Y-%m-%d}/hr={arrival:%H}/{arrival.strftime(_TS_FORMAT)}"
        f"-{producer}-{first_seq:012d}-{lines:07d}-{digest}{SEGMENT_SUFFIX}"
    )


def with_signature(key: str, signature: str) -> str:
    """``key`` (unsigned) carrying ``signature``."""
    return f"{key.removesuffix(SEGMENT_SUFFIX)}-s{signature}{SEGMENT_SUFFIX}"


def key_floor(moment: datetime, prefix: str = LOG_PREFIX) -> str:
    """A string that sorts before every segment key that arrived at or after ``moment``."""
    moment = moment.astimezone(UTC)
    return f"{prefix}/dt={moment:%Y-%m-%d}/hr={moment:%H}/{moment.strftime(_TS_FORMAT)}"


def day_prefix(day: date | str, prefix: str = LOG_PREFIX) -> str:
    """The key prefix of every segment that arrived on ``day``."""
    text = day if isinstance(day, str) else day.isoformat()
    date.fromisoformat(text)  # reject anything that is not a day
    return f"{prefix}/dt={text}/"
