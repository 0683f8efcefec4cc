"""Reading and committing Iceberg table data the way every AgentLake stage does it.

A commit holds new data files and the table's updated ledger in one transaction (one
metadata.json). pyiceberg's automatic retry is off for AgentLake's tables: a conflicting
commit raises ``CommitFailedException`` and the stage starts over from fresh table state.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile, DataFileContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from agentlake.log.segments import SegmentInfo
from agentlake.tables.ledger import DayLedger
from agentlake.tables.schemas import TableDef, conform

# Test hook: called with a stage name at each step where a crash matters (kill tests).
Checkpoint = Callable[[str], None]
MAX_KEYS_IN_SUMMARY = 100
_EPOCH = date(1970, 1, 1)
# Manifest path -> all its entries (of any status). Manifests are immutable, so a walk over many
# snapshots that share manifests reads each one once.
ManifestCache = dict[str, list[ManifestEntry]]


def release_memory() -> None:
    """Hand freed memory back to the system between chunks (glibc only; a no-op elsewhere).

    Chunks of 16 MiB land in glibc's heap, and after many of them the process keeps the freed
    pages: trimming keeps an ingest's resident memory flat however large its segments are.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - present on glibc only
    except (OSError, AttributeError):
        return None
    return libc


def day_bounds(day: str, days_before: int = 0, column: str = "arrival") -> BooleanExpression:
    """Rows whose ``column`` (the arrival) falls on ``day`` or the ``days_before`` days before it (whole partitions)."""
    start = datetime.combine(date.fromisoformat(day) - timedelta(days=days_before), datetime.min.time(), UTC)
    end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), UTC)
    return And(_ge(column, start.isoformat()), _lt(column, end.isoformat()))


# pyiceberg's expression classes confuse type checkers; these are the only places they are built.
def _ge(column: str, value: Any) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg, arg-type, misc]


def _lt(column: str, value: Any) -> BooleanExpression:
    return LessThan(column, value)  # type: ignore[call-arg, arg-type, misc]


def one_of(column: str, values: Iterable[Any]) -> BooleanExpression:
    """Rows whose ``column`` is one of ``values``."""
    return In(column, list(values))  # type: ignore[call-arg, arg-type, misc]


def read_rows(table: Table, tdef: TableDef, row_filter: BooleanExpression) -> pl.DataFrame:
    """The rows of ``table`` matching ``row_filter`` at its current snapshot, as polars."""
    if table.current_snapshot() is None:
        return _polars(tdef.arrow_schema().empty_table())
    return _polars(table.scan(row_filter=row_filter).to_arrow())


def _polars(data: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


# --- the one walk over a snapshot's manifests ----------------------------------------------------


def manifest_entries(io: FileIO, manifest: ManifestFile, cache: ManifestCache | None = None) -> list[ManifestEntry]:
    """Every entry of ``manifest``, deleted ones too; read from the store once per ``cache``."""
    if cache is None:
        return manifest.fetch_manifest_entry(io, discard_deleted=False)
    if manifest.manifest_path not in cache:
        cache[manifest.manifest_path] = manifest.fetch_manifest_entry(io, discard_deleted=False)
    return cache[manifest.manifest_path]


def file_day(data_file: DataFile) -> str:
    """The arrival day (``YYYY-MM-DD``) of a file's partition, or "" for an unpartitioned file."""
    value = data_file.partition[0] if len(data_file.partition) else None
    return (_EPOCH + timedelta(days=int(value))).isoformat() if value is not None else ""


def live_files(
    table: Table,
    snapshot: Snapshot | None = None,
    *,
    partition_day: str | None = None,
    data_only: bool = False,
    cache: ManifestCache | None = None,
) -> list[DataFile]:
    """The live data and delete files of ``snapshot`` (default: the current snapshot of ``main``).

    Args:
        partition_day: only the files of this arrival day's partition.
        data_only: data files only, no delete files.
        cache: manifests already read (see :data:`ManifestCache`).
    """
    snapshot = snapshot or table.current_snapshot()
    if snapshot is None:
        return []
    files = []
    for manifest in snapshot.manifests(table.io):
        for entry in manifest_entries(table.io, manifest, cache):
            data_file = entry.data_file
            if entry.status == ManifestEntryStatus.DELETED:
                continue
            if data_only and data_file.content != DataFileContent.DATA:
                continue
            if partition_day is not None and file_day(data_file) != partition_day:
                continue
            files.append(data_file)
    return files


def referenced_files(io: FileIO, snapshots: Sequence[Snapshot], cache: ManifestCache) -> dict[str, int]:
    """Every file these snapshots reference (manifest lists, manifests, data and delete files), with sizes.

    Entries of any status count, deleted ones too: a file is "referenced" as long as any
    manifest mentions it, which errs on the side of keeping it.
    """
    out: dict[str, int] = {}
    for snapshot in snapshots:
        out[snapshot.manifest_list] = out.get(snapshot.manifest_list, 0)
        for manifest in snapshot.manifests(io):
            out[manifest.manifest_path] = manifest.manifest_length
            for entry in manifest_entries(io, manifest, cache):
                out[entry.data_file.file_path] = entry.data_file.file_size_in_bytes
    return out


def write_files(table: Table, tdef: TableDef, parts: list[pa.Table]) -> list[DataFile]:
    """Write rows as Parquet data files of ``table``: not committed, so invisible to readers."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return []
    data = pa.concat_tables([conform(p, tdef) for p in parts])
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=data, io=table.io))


def summary(
    segments: list[SegmentInfo], *, run_id: str, partition: str, extra: dict[str, Any] | None = None,
    dagster_run_id: str = "",
) -> dict[str, str]:
    """Snapshot summary properties: who committed, for which partition, holding which segments.

    Args:
        dagster_run_id: the orchestrator's run that commits (empty from the command line), so an
            audit reads it from the table itself.
    """
    keys = sorted(s.key for s in segments)
    props = {
        "agentlake.run-id": run_id,
        "agentlake.dagster_run_id": dagster_run_id,
        "agentlake.partition": partition,
        "agentlake.segment-count": str(len(keys)),
    }
    if keys:
        props["agentlake.segment-first"] = keys[0]
        props["agentlake.segment-last"] = keys[-1]
    if len(keys) <= MAX_KEYS_IN_SUMMARY:
        props["agentlake.segments"] = orjson.dumps(keys).decode()
    props.update({k: str(v) for k, v in (extra or {}).items()})
    return props


def commit(
    table: Table,
    data_files: list[DataFile],
    ledger: DayLedger,
    snapshot_properties: dict[str, str],
    check: Checkpoint,
    *,
    replace: BooleanExpression | None = None,
) -> int:
    """Commit data files and the updated ledger in one transaction; returns the new snapshot id.

    Args:
        replace: rows matching this filter are deleted in the same transaction (a rebuild).

    Raises:
        CommitFailedException: another writer committed first; start the stage again.
    """
    name = table.name()[-1]
    check(f"before-commit:{name}")
    with table.transaction() as tx:
        if replace is not None and table.current_snapshot() is not None and table.scan(row_filter=replace).count():
            tx.delete(replace, snapshot_properties=snapshot_properties)
        # A merge append honours commit.manifest-merge.enabled: manifests are merged as they pile
        # up, so a scan reads a few manifests however many commits the table has had.
        with tx.update_snapshot(snapshot_properties=snapshot_properties).merge_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)
        tx.set_properties({ledger.property_name: ledger.to_json()})
    check(f"after-commit:{name}")
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
