"""Pins: the table snapshots a context artifact read, kept readable for the pin retention.

A pin is a write-once record in the object store, outside the table's metadata::

    pins/<table>/<snapshot id>/<expires ms>.json                      the pin
    pins/<table>/as-of/<created ms>-<snapshot id>-<expires ms>.json   the same record, for a historical pin

holding ``{table, snapshot_id, metadata_location, created_ms, expires_ms, historical, table_uuid}``.
Pinning commits nothing to the table, so it never conflicts with ingest, and the table's
metadata does not grow with pins: expiry removes pinned snapshots from it like any other.
A pinned snapshot stays readable because every commit left an immutable metadata file
(never deleted) and the record names one that holds the snapshot; maintenance defers deleting
the files expired snapshots used for the pin retention (:mod:`agentlake.maintenance.maintain`).

Re-pinning writes a record with a later expiry: the expiry in force is the latest of a
snapshot's records. Expiries are rounded up to the next whole hour, so the many artifacts that
read one snapshot write at most one record an hour between them (the others find it there).

A pin is *historical* when its snapshot was not the current snapshot of ``main`` when it was
pinned (an as-of read): its files may already be waiting for deletion, so maintenance spares
the files of historical pins made after those files were noticed. Historical pins are also
listed under ``as-of/``, by creation time, for that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from pyiceberg.table import Table

from agentlake.errors import AgentLakeError, AlreadyExists, ObjectNotFound
from agentlake.storage.signing import record_problem, signed
from agentlake.tables.lake import Lake

PIN_ROOT = "pins"
HISTORICAL = "as-of"
DAY_MS = 24 * 3600 * 1000
# Expiry of a pin is rounded up to this, so re-pins within it write nothing new.
PIN_GRANULARITY_MS = 3600 * 1000


class PinFailed(AgentLakeError):
    """A snapshot could not be pinned: it is gone from its table and no metadata file holding it is known."""


def retention_ms(days: float) -> int:
    return int(days * DAY_MS)


def pin_expiry(created_ms: int, retention: int) -> int:
    """When a pin made at ``created_ms`` runs out: ``created_ms + retention``, rounded up to the hour."""
    expires = created_ms + retention
    return -(-expires // PIN_GRANULARITY_MS) * PIN_GRANULARITY_MS


@dataclass(frozen=True)
class Pin:
    """One pin record: which snapshot, a metadata file holding it, and until when it holds."""

    table: str
    snapshot_id: int
    metadata_location: str
    created_ms: int
    expires_ms: int
    historical: bool
    table_uuid: str = ""  # the table's identity: a table dropped and created again is another table

    @property
    def key(self) -> str:
        return pin_key(self.table, self.snapshot_id, self.expires_ms)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Pin:
        raw = orjson.loads(data)
        return cls(table=str(raw["table"]), snapshot_id=int(raw["snapshot_id"]),
                   metadata_location=str(raw["metadata_location"]), created_ms=int(raw["created_ms"]),
                   expires_ms=int(raw["expires_ms"]), historical=bool(raw["historical"]),
                   table_uuid=str(raw.get("table_uuid", "")))


def pin_prefix(table: str, snapshot_id: int) -> str:
    return f"{PIN_ROOT}/{table}/{int(snapshot_id)}/"


def pin_key(table: str, snapshot_id: int, expires_ms: int) -> str:
    return f"{pin_prefix(table, snapshot_id)}{expires_ms:015d}.json"


def historical_prefix(table: str) -> str:
    return f"{PIN_ROOT}/{table}/{HISTORICAL}/"


def historical_key(pin: Pin) -> str:
    return f"{historical_prefix(pin.table)}{pin.created_ms:015d}-{pin.snapshot_id}-{pin.expires_ms:015d}.json"


def write_pin(lake: Lake, pin: Pin) -> bool:
    """Write a pin record (and its as-of listing when historical); False if an equal expiry was there already."""
    body = orjson.dumps(signed(lake.settings.signing_key, asdict(pin)), option=orjson.OPT_SORT_KEYS)
    written = _put(lake, pin.key, body)
    if pin.historical:
        # Listed by creation time even if the snapshot already had a record for this hour: the
        # record in place may be a current pin, which maintenance does not look for.
        written = _put(lake, historical_key(pin), body) or written
    return written


def _read_pin(lake: Lake, key: str) -> Pin | None:
    """The pin record at ``key``; None if it is gone, or not provably AgentLake's (see agentlake.storage.signing)."""
    try:
        raw = orjson.loads(lake.store.get(key))
    except (ObjectNotFound, orjson.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or record_problem(lake.settings, raw) is not None:
        return None  # a forged pin would choose the metadata file a snapshot is read through: ignored
    try:
        return Pin.from_json(orjson.dumps(raw))
    except (KeyError, ValueError, TypeError):
        return None


def _put(lake: Lake, key: str, body: bytes) -> bool:
    try:
        lake.store.put_once(key, body)
    except AlreadyExists:
        return False
    return True


def pins_of(lake: Lake, table: str, snapshot_id: int) -> list[Pin]:
    """The pin records of one snapshot, latest expiry last."""
    out = []
    for info in lake.store.list(pin_prefix(table, snapshot_id)):
        if (pin := _read_pin(lake, info.key)) is not None:
            out.append(pin)
    return sorted(out, key=lambda p: p.expires_ms)


def pin_in_force(lake: Lake, table: str, snapshot_id: int) -> Pin | None:
    """The snapshot's pin record with the latest expiry (None if it was never pinned)."""
    found = pins_of(lake, table, snapshot_id)
    return found[-1] if found else None


def pins_in_force(lake: Lake, table: str, now_ms: int) -> list[Pin]:
    """Every pin record of ``table`` (historical ones included) that has not run out at ``now_ms``."""
    out = []
    for info in lake.store.list(f"{PIN_ROOT}/{table}/"):
        stem = info.key.rsplit("/", 1)[-1].removesuffix(".json")
        expires = stem.rsplit("-", 1)[-1] if info.key.startswith(historical_prefix(table)) else stem
        if not expires.isdigit() or int(expires) <= now_ms:
            continue  # run out (or not a pin record's name): holds nothing
        if (pin := _read_pin(lake, info.key)) is not None:
            out.append(pin)
    return [p for p in out if p.expires_ms > now_ms]


def historical_pins(lake: Lake, table: str, created_after_ms: int) -> list[Pin]:
    """Historical pins of ``table`` made after ``created_after_ms``."""
    prefix = historical_prefix(table)
    out = []
    for info in lake.store.list(prefix, after=f"{prefix}{created_after_ms:015d}-"):
        if (pin := _read_pin(lake, info.key)) is not None:
            out.append(pin)
    return [p for p in out if p.created_ms > created_after_ms]


def pin_snapshots(
    lake: Lake,
    pins: dict[str, int | None],
    *,
    created_ms: int,
    retention: int,
    tables: dict[str, Table] | None = None,
    locations: dict[str, str] | None = None,
) -> dict[str, bool]:
    """Write a pin record lasting until ``created_ms + retention`` for each pinned snapshot.

    No table commit: pinning never conflicts with writers. A snapshot that is not the current
    snapshot of ``main`` in the loaded handle is pinned as historical.

    Args:
        tables: handles already loaded (else each table is loaded from the catalog).
        locations: per table, a metadata file holding its snapshot when the table's current
            metadata no longer does (an as-of read older than the table's live snapshots).

    Returns:
        Per table, whether a new record was written (False: one with that expiry was there).

    Raises:
        PinFailed: a snapshot is gone from its table and no metadata file holding it is known.
    """
    written: dict[str, bool] = {}
    expires_ms = pin_expiry(created_ms, retention)
    for name, snapshot_id in pins.items():
        if snapshot_id is None:
            continue
        table = (tables or {}).get(name) or lake.table(name)
        current = table.current_snapshot()
        location = (locations or {}).get(name)
        if table.snapshot_by_id(snapshot_id) is not None:
            location = location or table.metadata_location
        elif location is None:
            earlier = pin_in_force(lake, name, snapshot_id)
            if earlier is None:
                raise PinFailed(f"snapshot {snapshot_id} of {name} is gone from the table's metadata (expired) and "
                                "was never pinned; assemble the context again to read the current snapshot")
            location = earlier.metadata_location
        historical = current is None or current.snapshot_id != snapshot_id
        pin = Pin(table=name, snapshot_id=int(snapshot_id), metadata_location=location, created_ms=created_ms,
                  expires_ms=expires_ms, historical=historical, table_uuid=str(table.metadata.table_uuid))
        written[name] = write_pin(lake, pin)
    return written
