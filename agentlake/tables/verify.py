"""Checking a snapshot's data files against what its manifests recorded of them.

Iceberg's metadata counts rows without reading data files, so a file deleted, truncated or
replaced under a snapshot goes unnoticed by ``count(*)`` and by reconciliation's counts. This
reads each data file's size and Parquet footer and holds them against its manifest entry:
the file must exist, have the recorded size, and hold the recorded number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.parquet as pq
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from agentlake.tables.files import live_files


@dataclass
class FileCheck:
    """What reading a snapshot's data files found."""

    files: int = 0
    rows: int = 0  # rows in the files' footers, where they could be read
    problems: list[str] = field(default_factory=list)  # one per file that is not what its manifest says

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_files(table: Table, snapshot: Snapshot | None = None, *, partition_day: str | None = None) -> FileCheck:
    """Read every live data file of ``snapshot`` (default: the current one) and compare it to its manifest.

    Args:
        partition_day: only the files of this arrival day.
    """
    check = FileCheck()
    for data_file in live_files(table, snapshot, partition_day=partition_day, data_only=True):
        check.files += 1
        path = data_file.file_path
        try:
            source = table.io.new_input(path)
            if not source.exists():
                check.problems.append(f"{path}: missing (the manifest lists it with {data_file.record_count} rows)")
                continue
            size = len(source)
            if size != data_file.file_size_in_bytes:
                check.problems.append(f"{path}: {size} bytes, the manifest recorded {data_file.file_size_in_bytes}")
                continue
            with source.open() as stream:
                rows = pq.ParquetFile(stream).metadata.num_rows
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: not a Parquet file
            check.problems.append(f"{path}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            continue
        check.rows += rows
        if rows != data_file.record_count:
            check.problems.append(f"{path}: {rows} rows, the manifest recorded {data_file.record_count}")
    return check
