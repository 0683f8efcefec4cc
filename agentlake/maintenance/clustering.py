"""Clustering a day's data files by run, so a context request for one run opens one file, one row group.

Run ids are random and rows land in arrival order, so every ingest file spans every run id:
a filter on ``run_id`` can prune nothing by column bounds. Clustering rewrites a partition's
live files sorted by ``run_id`` into large files with disjoint ``run_id`` ranges and small row
groups (``ROW_GROUP_ROWS``): the Iceberg reader skips files by their manifest bounds and the
Parquet reader skips row groups by their statistics. Rows are unchanged (so are the ledgers in
the table properties); the commit replaces exactly the files it read, so a concurrent writer's
rows are never touched, and a conflicting commit makes it start again. Snapshots pinned by
context artifacts keep the old files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table

from agentlake.errors import StageAborted
from agentlake.storage.retry import DEFAULT_POLICY, RetryPolicy, StageRetry
from agentlake.tables.files import live_files
from agentlake.tables.lake import Lake

ROW_GROUP_ROWS = 8192
TARGET_FILE_BYTES = 64 * 1024 * 1024


@dataclass
class ClusterReport:
    table: str
    day: str
    files_read: int = 0
    files_written: int = 0
    rows: int = 0
    snapshot_id: int | None = None
    seconds: float = 0.0


def cluster_day(lake: Lake, table_name: str, day: str, *, column: str = "run_id",
                retry: RetryPolicy = DEFAULT_POLICY) -> ClusterReport:
    """Rewrite the live files of arrival day ``day`` of a table, sorted by ``column``.

    Raises:
        StageAborted: commits kept conflicting with other writers; run it again.
    """
    started = time.perf_counter()
    report = ClusterReport(table_name, day)
    def attempt() -> None:
        table = lake.table(table_name)
        files = live_files(table, partition_day=day, data_only=True)
        if not files:
            return
        data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(
            [FileScanTask(f) for f in files]
        )
        if data.num_rows != sum(f.record_count for f in files):
            raise StageAborted(f"clustering {table_name} {day} read {data.num_rows} rows from files holding "
                               f"{sum(f.record_count for f in files)}; nothing was committed")
        keys = [(column, "ascending")] + [(c, "ascending") for c in ("event_id", "document_rank") if c in data.column_names]
        outputs = _write(table, data.sort_by(keys))
        with table.transaction() as tx:
            properties = {"agentlake.maintenance": "cluster", "agentlake.partition": day,
                          "agentlake.clustered-by": column}
            with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                for data_file in files:
                    overwrite.delete_data_file(data_file)
                for data_file in outputs:
                    overwrite.append_data_file(data_file)
        snapshot = table.current_snapshot()
        report.files_read, report.files_written, report.rows = len(files), len(outputs), data.num_rows
        report.snapshot_id = snapshot.snapshot_id if snapshot else None

    StageRetry(f"clustering {table_name} {day}", policy=retry).run(attempt)
    report.seconds = time.perf_counter() - started
    return report


def _write(table: Table, data: pa.Table) -> list[DataFile]:
    properties = {**table.metadata.properties, "write.parquet.row-group-limit": str(ROW_GROUP_ROWS),
                  "write.target-file-size-bytes": str(TARGET_FILE_BYTES)}
    metadata = table.metadata.model_copy(update={"properties": properties})
    return list(_dataframe_to_data_files(table_metadata=metadata, df=data, io=table.io))

