"""Dagster's typed table metadata for the Iceberg tables, in one place.

The UI shows a table's name, columns and row count from the ``dagster/*`` keys of Dagster's
``TableMetadataSet``; on a partitioned asset the partition's own row count goes beside the whole
table's. Dagster 1.13 does not export ``TableMetadataSet`` from ``dagster`` (only from its private
``_core``), so :class:`TableMetadata` declares the same fields and keys with public types; a test
reads them back with Dagster's own set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import TableColumn, TableSchema
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from agentlake.tables.files import day_bounds
from agentlake.tables.schemas import TableDef


@dataclass(frozen=True)
class TableMetadata:
    """The fields of Dagster's ``TableMetadataSet`` that AgentLake reports, under its ``dagster/`` keys."""

    table_name: str
    column_schema: TableSchema | None = None
    row_count: int | None = None
    partition_row_count: int | None = None

    def as_metadata(self) -> dict[str, Any]:
        """The entries to pass as asset metadata (unset fields are left out, as Dagster's set does)."""
        fields = {"table_name": self.table_name, "column_schema": self.column_schema, "row_count": self.row_count,
                  "partition_row_count": self.partition_row_count}
        return {f"dagster/{name}": value for name, value in fields.items() if value is not None}


def column_schema(schema: Schema) -> TableSchema:
    """The Iceberg schema as Dagster's column schema, with each column's doc as its description."""
    return TableSchema(columns=[TableColumn(f.name, str(f.field_type), description=f.doc or None) for f in schema.fields])


def table_definition_metadata(tdef: TableDef) -> dict[str, Any]:
    """An asset definition's metadata: the table's name and declared columns."""
    return TableMetadata(table_name=tdef.name, column_schema=column_schema(tdef.schema())).as_metadata()


def table_rows(table: Table) -> int:
    """Rows in the table's current snapshot, from its summary (no scan)."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-records", 0))


def partition_rows(table: Table, tdef: TableDef, day: str) -> int:
    """Rows of the arrival day ``day`` (one Dagster partition); counted from the day's files."""
    if table.current_snapshot() is None:
        return 0
    return int(table.scan(row_filter=day_bounds(day, column=tdef.partition_column)).count())


def table_metadata(table: Table, tdef: TableDef, day: str | None = None) -> dict[str, Any]:
    """A materialization's typed table metadata: name, current columns, rows, and the partition's rows."""
    return TableMetadata(
        table_name=tdef.name,
        column_schema=column_schema(table.schema()),
        row_count=table_rows(table),
        partition_row_count=partition_rows(table, tdef, day) if day is not None else None,
    ).as_metadata()
