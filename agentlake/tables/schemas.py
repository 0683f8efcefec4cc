"""AgentLake's Iceberg tables: explicit schemas (field ids, required/optional) and partition specs.

Every table is partitioned by the **arrival day** of the log segment its rows came from
(``day(arrival)``). That is the Dagster partition key: a backfill of day D replaces exactly one
Iceberg partition, the dedup window reads only the last few partitions, and reconciliation
counts one partition against one log prefix. Queries by event time still prune well because
events arrive within seconds to days of their ``ts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BinaryType,
    DoubleType,
    IcebergType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)
from sqlalchemy.exc import IntegrityError

from agentlake.log.events import FIELDS

# Column kinds of events.py mapped to Iceberg types; documents get their own nested ids below.
_PRIMITIVES: dict[str, IcebergType] = {
    "string": StringType(),
    "int": LongType(),
    "float": DoubleType(),
    "timestamp": TimestamptzType(),
    "json": StringType(),
    "binary": BinaryType(),
}

LINEAGE: tuple[tuple[str, str, bool, str], ...] = (
    ("segment_key", "string", True, "the log segment the row came from"),
    ("line_offset", "int", True, "the line's offset in its segment, from 0"),
    ("producer", "string", True, "the producer id that wrote the segment"),
    ("seq", "int", True, "the line's sequence number within its producer"),
    ("arrival", "timestamp", True, "when the segment arrived (its key's time): the partition"),
    ("ingest_run_id", "string", True, "the ingest run that committed the row"),
)


@dataclass(frozen=True)
class TableDef:
    """One table: its name, columns ``(name, kind, required, doc)`` and what it holds."""

    name: str
    columns: tuple[tuple[str, str, bool, str], ...]
    description: str
    partition_column: str = "arrival"

    @property
    def namespace(self) -> str:
        return self.name.split(".")[0]

    def schema(self) -> Schema:
        fields = []
        next_id = 1
        for name, kind, required, doc in self.columns:
            field_id = next_id
            next_id += 1
            if kind == "documents":
                element = StructType(
                    NestedField(next_id + 1, "id", StringType(), required=True),
                    NestedField(next_id + 2, "score", DoubleType(), required=False),
                )
                ftype: IcebergType = ListType(next_id, element, element_required=True)
                next_id += 3
            else:
                ftype = _PRIMITIVES[kind]
            fields.append(NestedField(field_id, name, ftype, required=required, doc=doc or None))
        return Schema(*fields)

    def partition_spec(self, schema: Schema) -> PartitionSpec:
        source = schema.find_field(self.partition_column)
        return PartitionSpec(
            PartitionField(source_id=source.field_id, field_id=1000, transform=DayTransform(), name="arrival_day")
        )

    def arrow_schema(self) -> pa.Schema:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        return schema_to_pyarrow(self.schema(), include_field_ids=False)


def _event_columns() -> tuple[tuple[str, str, bool, str], ...]:
    return tuple((f.column, f.kind, f.required, f.doc) for f in FIELDS)


def _cols(*names: str) -> tuple[tuple[str, str, bool, str], ...]:
    by_name = {c[0]: c for c in _event_columns() + LINEAGE}
    return tuple(by_name[n] for n in names)


_FACT_LINEAGE = ("segment_key", "line_offset", "arrival", "ingest_run_id")
_FACT_KEYS = ("event_id", "run_id", "agent_id", "agent_version", "tenant", "ts", "span_id", "parent_span_id")

EVENTS = TableDef(
    "raw.events",
    _event_columns() + LINEAGE,
    "Every valid agent event from the raw log, once (deduplicated by event_id), with its lineage: "
    "segment key, line offset, producer sequence, arrival time and ingest run.",
)
QUARANTINE = TableDef(
    "raw.quarantine",
    _cols("segment_key", "line_offset", "producer", "seq", "arrival")
    + (
        ("line", "binary", True, "the line exactly as it was in the log"),
        ("rule", "string", True, "which check the line failed: parse, schema, conflict, or a quality rule"),
        ("reason", "string", True, "what is wrong with the line, readably"),
        ("event_id", "string", False, "the line's event_id, when one could be read"),
    )
    + _cols("ingest_run_id"),
    "Every log line that failed parsing, validation or a row-level quality rule, kept whole "
    "with its segment, offset and the reason. Lines in = events + quarantined + duplicates.",
)
LLM_CALLS = TableDef(
    "facts.llm_calls",
    _cols(*_FACT_KEYS, "operation", "provider", "model", "input_tokens", "output_tokens", "finish_reason",
          "latency_ms", "status", "error_type", *_FACT_LINEAGE),
    "One row per LLM call (event type llm_call): model, provider, token usage, latency, finish reason.",
)
TOOL_CALLS = TableDef(
    "facts.tool_calls",
    _cols(*_FACT_KEYS, "tool_name", "tool_call_id", "latency_ms", "status", "error_type", *_FACT_LINEAGE),
    "One row per tool call (event type tool_call): tool, call id, latency, status and error type.",
)
RETRIEVALS = TableDef(
    "facts.retrievals",
    _cols(*_FACT_KEYS, "retrieval_source")
    + (
        ("document_rank", "int", True, "the document's position in the retrieval's result, from 0"),
        ("document_id", "string", True, "the retrieved document"),
        ("score", "float", False, "the retriever's score for the document"),
    )
    + _cols("latency_ms", *_FACT_LINEAGE),
    "One row per retrieved document (event type retrieval): source, document id, rank and score.",
)
DECISIONS = TableDef(
    "facts.decisions",
    _cols(*_FACT_KEYS, "decision_label", "attributes", *_FACT_LINEAGE),
    "One row per agent decision (event type decision) with its label.",
)
FEEDBACK = TableDef(
    "facts.feedback",
    _cols(*_FACT_KEYS, "feedback_score", "feedback_label", *_FACT_LINEAGE),
    "One row per feedback event; feedback often arrives minutes to days after its run (late facts), "
    "so it lands in the partition of the day it arrived.",
)
AGENT_RUNS = TableDef(
    "facts.agent_runs",
    (
        ("run_id", "string", True, "the agent run (one trace)"),
        ("agent_id", "string", True, ""),
        ("agent_version", "string", False, ""),
        ("tenant", "string", False, ""),
        ("started_at", "timestamp", False, "ts of run_started, else of the run's first event"),
        ("ended_at", "timestamp", True, "ts of run_finished"),
        ("status", "string", False, "run_finished's status"),
        ("steps", "int", True, "events of the run between start and finish"),
        ("llm_calls", "int", True, ""),
        ("tool_calls", "int", True, ""),
        ("retrievals", "int", True, ""),
        ("input_tokens", "int", True, "sum over the run's LLM calls"),
        ("output_tokens", "int", True, "sum over the run's LLM calls"),
        ("latency_ms", "float", False, "run_finished's latency, else ended_at - started_at"),
        ("error_count", "int", True, "error events plus steps with status error"),
    )
    + _cols(*_FACT_LINEAGE),
    "One row per finished agent run, summarising its events as of its run_finished event; the lineage "
    "columns are those of run_finished, so the run lands in the partition of the day it finished.",
)

# Source tables hold what agents read besides their own events (documents, later tickets and
# customers loaded by dlt into the same ``ext`` namespace). They are readable by queries and context
# assembly like the others, but not built from the log (ingest, reconciliation and kill tests skip them).
DOCUMENTS = TableDef(
    "ext.documents",
    (
        ("doc_id", "string", True, "the document's id, e.g. kb-articles/000012 (what a retrieval names)"),
        ("title", "string", True, ""),
        ("body", "string", True, "the document's text, markdown"),
        ("content_hash", "string", True, "sha256 of the body (hex)"),
        ("updated_at", "timestamp", True, "when this version of the document was written: the partition"),
    ),
    "One row per document version agents can retrieve; a changed document is a new row with a new content_hash.",
    partition_column="updated_at",
)

RAW_TABLES = (EVENTS, QUARANTINE)
FACT_TABLES = (AGENT_RUNS, LLM_CALLS, TOOL_CALLS, RETRIEVALS, DECISIONS, FEEDBACK)
ALL_TABLES = RAW_TABLES + FACT_TABLES
SOURCE_TABLES = (DOCUMENTS,)
TABLES_BY_NAME = {t.name: t for t in ALL_TABLES + SOURCE_TABLES}

TABLE_PROPERTIES: dict[str, str] = {
    # Retries are AgentLake's own (refresh, re-check the ledger, re-append): pyiceberg's automatic
    # retry re-applies an append without re-checking, which duplicates rows.
    "commit.retry.num-retries": "0",
    "write.parquet.compression-codec": "zstd",
    "commit.manifest-merge.enabled": "true",
    "format-version": "2",
}


def ensure_tables(catalog: Catalog, tables: Sequence[TableDef] = ALL_TABLES) -> dict[str, Table]:
    """Create AgentLake's namespaces and tables where missing; return them by name."""
    out: dict[str, Table] = {}
    for tdef in tables:
        try:
            catalog.create_namespace(tdef.namespace)
        except (NamespaceAlreadyExistsError, IntegrityError):
            pass  # IntegrityError: another process created it between pyiceberg's check and its insert
        try:
            out[tdef.name] = catalog.load_table(tdef.name)
            continue
        except NoSuchTableError:
            pass
        schema = tdef.schema()
        try:
            out[tdef.name] = catalog.create_table(
                tdef.name,
                schema=schema,
                partition_spec=tdef.partition_spec(schema),
                properties={**TABLE_PROPERTIES, "comment": tdef.description},
            )
        except (TableAlreadyExistsError, IntegrityError):  # another process created it first
            out[tdef.name] = catalog.load_table(tdef.name)
    return out


def conform(table: pa.Table, tdef: TableDef) -> pa.Table:
    """Select and cast ``table``'s columns to exactly the table's Arrow schema (order, types, nullability)."""
    target = tdef.arrow_schema()
    columns: list[Any] = []
    for field in target:
        column = table.column(field.name) if field.name in table.column_names else pa.nulls(len(table), field.type)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=target)
