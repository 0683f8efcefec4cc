"""Pins: the table snapshots a context artifact read, kept from expiry for the pin retention.

A pin is an Iceberg tag on the snapshot itself, named ``agentlake.pin.<snapshot_id>``, whose
``max_ref_age_ms`` makes it last until (artifact creation time + retention). Iceberg measures a
ref's age from its snapshot's own timestamp, so the age is
``(created_ms - snapshot.timestamp_ms) + retention_ms``. Table maintenance never expires a
snapshot a tag references, and removes a pin tag only once ``now > snapshot time + max_ref_age_ms``.

One tag per snapshot, not per artifact: every artifact reading the same snapshot shares it, and
re-pinning only ever extends it. The expiry is rounded up to the next whole hour, so the many
artifacts that read one snapshot commit at most one extension per hour between them; the number
of pins a table carries is bounded by its commits (at most one snapshot per ingest tick).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from agentlake.errors import AgentLakeError
from agentlake.lake import Lake

PIN_PREFIX = "agentlake.pin."
DAY_MS = 24 * 3600 * 1000
# Expiry of a pin is rounded up to this, so re-pins within it commit nothing.
PIN_GRANULARITY_MS = 3600 * 1000


class PinFailed(AgentLakeError):
    """A snapshot could not be pinned: it is gone, or commits kept conflicting."""


def pin_tag(snapshot_id: int) -> str:
    """The name of the tag pinning ``snapshot_id``."""
    return f"{PIN_PREFIX}{snapshot_id}"


def retention_ms(days: float) -> int:
    return int(days * DAY_MS)


def pin_age_ms(snapshot_ts_ms: int, created_ms: int, retention: int) -> int:
    """``max_ref_age_ms`` for a pin lasting at least until ``created_ms + retention``."""
    expires = created_ms + retention
    expires = -(-expires // PIN_GRANULARITY_MS) * PIN_GRANULARITY_MS
    return expires - snapshot_ts_ms


@dataclass(frozen=True)
class Pin:
    """One pin tag: which snapshot it holds and until when (ms since the epoch; None: forever)."""

    table: str
    tag: str
    snapshot_id: int
    expires_ms: int | None


def pins_of(table: Table) -> list[Pin]:
    """The pin tags a table carries."""
    out = []
    name = ".".join(table.name())
    for tag, ref in table.metadata.refs.items():
        if not tag.startswith(PIN_PREFIX) or ref.snapshot_ref_type != SnapshotRefType.TAG:
            continue
        snapshot = table.snapshot_by_id(ref.snapshot_id)
        expires = None
        if ref.max_ref_age_ms is not None and snapshot is not None:
            expires = snapshot.timestamp_ms + ref.max_ref_age_ms
        out.append(Pin(name, tag, ref.snapshot_id, expires))
    return out


def pin_snapshots(
    lake: Lake,
    pins: dict[str, int | None],
    *,
    created_ms: int,
    retention: int,
    tables: dict[str, Table] | None = None,
    max_attempts: int = 20,
) -> dict[str, bool]:
    """Make sure each pinned snapshot carries a pin tag lasting until ``created_ms + retention``.

    Args:
        tables: handles already loaded (saves a catalog read when no commit is needed).

    Returns:
        Per table, whether a commit was needed (a new tag, or an extended one).

    Raises:
        PinFailed: a snapshot is no longer in its table, or commits kept conflicting.
    """
    committed: dict[str, bool] = {}
    for name, snapshot_id in pins.items():
        if snapshot_id is None:
            continue
        loaded = (tables or {}).get(name)
        committed[name] = _pin_one(lake, name, snapshot_id, created_ms, retention, max_attempts, loaded)
    return committed


def _pin_one(
    lake: Lake, name: str, snapshot_id: int, created_ms: int, retention: int, max_attempts: int,
    loaded: Table | None,
) -> bool:
    tag = pin_tag(snapshot_id)
    for attempt in range(1, max_attempts + 1):
        table = loaded if loaded is not None and attempt == 1 else lake.table(name)
        snapshot = table.snapshot_by_id(snapshot_id)
        if snapshot is None:
            raise PinFailed(f"snapshot {snapshot_id} of {name} is gone (expired) before it could be pinned; "
                            "assemble the context again to read the current snapshot")
        wanted = pin_age_ms(snapshot.timestamp_ms, created_ms, retention)
        ref = table.metadata.refs.get(tag)
        if ref is not None:
            if ref.snapshot_id != snapshot_id:
                raise PinFailed(f"tag {tag} of {name} references snapshot {ref.snapshot_id}; pin tags are only "
                                "made by AgentLake: remove the foreign tag")
            if ref.max_ref_age_ms is None or ref.max_ref_age_ms >= wanted:
                return False  # already pinned long enough: re-pinning never shortens
        try:
            with table.manage_snapshots() as manage:
                # The name holds the snapshot id, so this only ever extends the same pin.
                manage.create_tag(snapshot_id, tag, max_ref_age_ms=wanted)
        except CommitFailedException:
            time.sleep(min(1.0, 0.02 * attempt))
            continue
        return True
    raise PinFailed(f"pinning snapshot {snapshot_id} of {name} conflicted with other writers {max_attempts} times; "
                    "run it again")
