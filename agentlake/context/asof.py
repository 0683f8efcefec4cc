"""Time travel through a table's metadata files: which snapshot of ``main`` was current at a time.

Every commit leaves an immutable metadata file (``<location>/metadata/<version>-<uuid>.metadata.json``,
never deleted), so what was visible at time T is the ``current-snapshot-id`` of the metadata
file that was current at T, read through that very file even after expiry removed the snapshot
from the table's current metadata. The lookup, cheapest first:

1. T at or after the current metadata's ``last-updated-ms``: the current snapshot.
2. T within the current metadata's ``metadata-log`` (the last 100 files by default): that entry.
3. Older: list the metadata folder through the object store, binary-search the versions (monotonic
   in the file name) by each file's ``last-updated-ms``, then take the answer from the
   ``metadata-log`` of a file of the next version. A commit that lost its race also left a
   file with a version, and that file never was current; the next version's log (written on
   top of the winner, whichever file it is) names only files that were.

Metadata files never change, so parsed ones are cached per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from pyiceberg.io import FileIO
from pyiceberg.table import Table

from agentlake.errors import AgentLakeError
from agentlake.tables.lake import Lake

METADATA_SUFFIX = ".metadata.json"
_CACHE_SIZE = 256
_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


class HistoryUnavailable(AgentLakeError):
    """The metadata files of a table cannot be listed, so an as-of time older than its metadata log cannot be resolved."""


@dataclass(frozen=True)
class SnapshotAt:
    """The snapshot of ``main`` current at a time (None: the table was empty or did not exist) and a metadata file holding it."""

    snapshot_id: int | None
    metadata_location: str | None


def read_metadata(io: FileIO, location: str) -> dict[str, Any]:
    """A metadata file, parsed (cached: metadata files are immutable)."""
    with _lock:
        if location in _cache:
            _cache.move_to_end(location)
            return _cache[location]
    with io.new_input(location).open() as stream:
        parsed: dict[str, Any] = orjson.loads(stream.read())
    with _lock:
        _cache[location] = parsed
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return parsed


def current_snapshot_id(metadata: dict[str, Any]) -> int | None:
    value = metadata.get("current-snapshot-id")
    return None if value is None or int(value) < 0 else int(value)


def holds_snapshot(metadata: dict[str, Any], snapshot_id: int) -> dict[str, Any] | None:
    """The snapshot's entry in a parsed metadata file, if it has one."""
    return next((s for s in metadata.get("snapshots", []) if int(s["snapshot-id"]) == snapshot_id), None)


def snapshot_at(lake: Lake, table: Table, as_of_ms: int) -> SnapshotAt:
    """The snapshot of ``main`` that was current at ``as_of_ms``, and a metadata file to read it through.

    Raises:
        HistoryUnavailable: the time is older than the metadata log and the table's metadata
            folder is not in the object store.
    """
    metadata = table.metadata
    if as_of_ms >= metadata.last_updated_ms:
        snapshot = table.current_snapshot()
        return SnapshotAt(snapshot.snapshot_id if snapshot else None, table.metadata_location)
    log = [(e.timestamp_ms, e.metadata_file) for e in metadata.metadata_log]
    if log and log[0][0] <= as_of_ms:
        location = next(path for ts, path in reversed(log) if ts <= as_of_ms)
        return _through(table, location)
    return _search(lake, table, as_of_ms)


def _through(table: Table, location: str) -> SnapshotAt:
    """The current snapshot of the metadata file at ``location``; read through the table's current
    metadata when that still holds it (its handle is loaded already)."""
    snapshot_id = current_snapshot_id(read_metadata(table.io, location))
    if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is not None:
        return SnapshotAt(snapshot_id, table.metadata_location)
    return SnapshotAt(snapshot_id, location)


def metadata_files(lake: Lake, table: Table) -> list[tuple[int, str]]:
    """Every metadata file of the table, as ``(version, location)`` in version order.

    Raises:
        HistoryUnavailable: the table's location is not in the object store.
    """
    base = lake.store.uri("")
    location = table.location().rstrip("/")
    if not location.startswith(base):
        raise HistoryUnavailable(
            f"{'.'.join(table.name())} lives at {location}, outside the object store ({base}); its metadata files "
            "cannot be listed, so only times within its metadata log can be read as of"
        )
    prefix = location[len(base):] + "/metadata/"
    out = []
    for info in lake.store.list(prefix):
        name = info.key.rsplit("/", 1)[-1]
        if not name.endswith(METADATA_SUFFIX):
            continue
        version = name.split("-", 1)[0]
        if version.isdigit():
            out.append((int(version), base + info.key))
    out.sort()
    return out


def _search(lake: Lake, table: Table, as_of_ms: int) -> SnapshotAt:
    files = metadata_files(lake, table)
    versions = sorted({v for v, _ in files})
    first_of: dict[int, str] = {}
    for version, location in files:
        first_of.setdefault(version, location)

    def updated(version: int) -> int:
        return int(read_metadata(table.io, first_of[version])["last-updated-ms"])

    # The last version whose file was written at or before the time.
    lo, hi = 0, len(versions) - 1
    found = -1
    while lo <= hi:
        mid = (lo + hi) // 2
        if updated(versions[mid]) <= as_of_ms:
            found, lo = mid, mid + 1
        else:
            hi = mid - 1
    if found < 0:
        return SnapshotAt(None, None)  # before the table's first metadata file: it did not exist
    if found + 1 < len(versions):
        # The next version's log names the files that were current, with the time each became so.
        later = read_metadata(table.io, first_of[versions[found + 1]])
        entries = [(int(e["timestamp-ms"]), str(e["metadata-file"])) for e in later.get("metadata-log", [])]
        chosen = [path for ts, path in entries if ts <= as_of_ms]
        if chosen:
            return _through(table, chosen[-1])
        return SnapshotAt(None, None)
    return _through(table, table.metadata_location)
