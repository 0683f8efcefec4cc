"""Context assembly: an agent run's context, read from pinned snapshots, kept as a durable artifact.

A **context request** is declarative, so it can be executed again: either one read-only SQL
statement over the tables by name, or a structured spec of sources (table, columns, filters,
order, limit), each compiled to SQL whose filters DuckDB pushes into the Iceberg scan (data
files whose column bounds exclude them are never opened).

Assembly resolves each table the request reads to the snapshot of ``main`` (published data)
current now, or current at ``as_of`` (:mod:`agentlake.context.asof`); pins those snapshots
(:mod:`agentlake.context.pins`, a record in the store, no table commit); runs the
request on exactly those snapshots (DuckDB's Iceberg reader, one embedded engine per process);
and writes a **context artifact**, write-once and
content-addressed in the object store, outside the log's prefix:

    artifacts/v1/records/<sha256 of the file>.parquet      the exact records of each part
    artifacts/v1/dt=<day>/<sha256 of the manifest>.json    the manifest (written last)
    artifacts/v1/runs/<run id>/<created>-<digest>          which artifacts a run made

The manifest holds the run and agent, the request, the plan the engine executed, the pins
``{table: snapshot_id}``, the record count, the records hash and schema, and the platform
version. A ``context_assembled`` event in the log links the run to the artifact.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr
from pyiceberg.catalog.sql import IcebergTables
from pyiceberg.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentlake.context.live import LiveQuery, read_live
from agentlake.context.pins import pin_snapshots, retention_ms
from agentlake.context.query import (
    Locations,
    Pins,
    QueryError,
    attach,
    check_read_only,
    open_connection,
    resolve,
    scan_expression,
)
from agentlake.context.sandbox import first_line, referenced_tables
from agentlake.errors import AgentLakeError, AlreadyExists, ObjectNotFound
from agentlake.log.writer import LogWriter
from agentlake.storage.signing import signed
from agentlake.storage.store import ObjectStore
from agentlake.tables.external import (
    EXT_TABLES,
    LIVE_SOURCES,
    QUERYABLE,
    ExternalTable,
    LiveSourceUnavailable,
    live_table,
)
from agentlake.tables.lake import Lake

ARTIFACT_PREFIX = "artifacts/v1"
MANIFEST_FORMAT = "agentlake.context/1"
SQL_PART = "result"
# The columns that identify a row of each table: added to every spec's selection and order (so
# the result is deterministic) and used to name what changed when a replay differs.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "raw.events": ("event_id",),
    "raw.quarantine": ("segment_key", "line_offset"),
    "facts.agent_runs": ("run_id",),
    "facts.retrievals": ("event_id", "document_rank"),
    "facts.llm_calls": ("event_id",),
    "facts.tool_calls": ("event_id",),
    "facts.decisions": ("event_id",),
    "facts.feedback": ("event_id",),
    "ext.documents": ("doc_id", "content_hash"),
    **{t.name: (t.primary_key,) for t in EXT_TABLES},
}
# What identifies a row of a SQL part, tried in order on its columns.
_SQL_KEYS = (("event_id", "document_rank"), ("event_id",), ("run_id",), ("segment_key", "line_offset"),
             ("doc_id", "content_hash"), *((t.primary_key,) for t in EXT_TABLES))
_OPS = {"=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MANIFEST_KEY_RE = re.compile(rf"^{re.escape(ARTIFACT_PREFIX)}/dt=\d{{4}}-\d{{2}}-\d{{2}}/[0-9a-f]{{64}}\.json$")


class ContextError(AgentLakeError):
    """Context assembly or replay failed; the message says why and what to do."""


class InvalidRequest(ContextError):
    """A context request is malformed: unknown table or column, bad operator, not one read-only query."""


class ArtifactNotFound(ContextError):
    """No context artifact at the given address, or none made by the given run."""


class LiveSourceFailed(ContextError):
    """A live part's source could not be read while assembling (its database is away or refused the query)."""


class ArtifactTampered(ContextError):
    """A file of an artifact does not hash to what its address or manifest says: it was altered."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"artifact file {key} was altered: its sha256 is {actual}, but {expected} was recorded when the "
            "artifact was written; the artifact's records can no longer be trusted"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One condition of a source: ``column op value`` (conditions of a source are ANDed)."""

    column: str
    op: str
    value: Any = None

    def to_json(self) -> list[Any]:
        return [self.column, self.op] if self.op in ("is null", "is not null") else [self.column, self.op, self.value]


@dataclass(frozen=True)
class Source:
    """One part of a structured request: rows of one table, filtered, projected, ordered, limited."""

    table: str
    name: str = ""
    columns: tuple[str, ...] | None = None
    filters: tuple[Filter, ...] = ()
    order_by: tuple[str, ...] = ()
    limit: int | None = None
    live: str | None = None  # a live source's name: the part reads that source directly, not a pinned table

    @property
    def part(self) -> str:
        return self.name or self.table

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.part, "table": self.table, "where": [f.to_json() for f in self.filters]}
        if self.live is not None:
            out["live"] = self.live
        if self.columns is not None:
            out["columns"] = list(self.columns)
        if self.order_by:
            out["order_by"] = list(self.order_by)
        if self.limit is not None:
            out["limit"] = self.limit
        return out


@dataclass(frozen=True)
class ContextRequest:
    """What a run asks for: one SQL statement, or structured sources. Re-executable as it is."""

    sql: str | None = None
    sources: tuple[Source, ...] = ()

    def __post_init__(self) -> None:
        if (self.sql is None) == (not self.sources):
            raise InvalidRequest("a context request is either SQL or a structured spec of sources, not both or neither")

    @classmethod
    def from_sql(cls, sql: str) -> ContextRequest:
        return cls(sql=sql)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ContextRequest:
        """A structured request from its JSON form.

        ``{"sources": [{"name": "history", "table": "raw.events", "columns": [...],
        "where": [["run_id", "=", "r-1"]], "order_by": ["ts"], "limit": 500}, ...]}``;
        a single source may also be given at the top level. ``where`` holds
        ``[column, op, value]`` with op one of = != < <= > >= in, not in, is null, is not null.

        Raises:
            InvalidRequest: an unknown table, column or operator, or a malformed field.
        """
        if "sql" in spec:
            return cls.from_sql(str(spec["sql"]))
        raw_sources = spec.get("sources", [spec] if "table" in spec else None)
        if not isinstance(raw_sources, list) or not raw_sources:
            raise InvalidRequest('a spec needs "sources": a list of {"table": ..., "where": [...]} objects')
        sources = tuple(_source(s, i) for i, s in enumerate(raw_sources))
        names = [s.part for s in sources]
        if len(set(names)) != len(names):
            raise InvalidRequest(f"source names must differ (got {names}); give each a distinct \"name\"")
        return cls(sources=sources)

    def to_json(self) -> dict[str, Any]:
        if self.sql is not None:
            return {"sql": self.sql}
        return {"sources": [s.to_json() for s in self.sources]}

    def tables(self) -> list[str]:
        """The tables the request reads (what gets pinned)."""
        if self.sql is None:
            return sorted({s.table for s in self.sources if s.live is None})
        try:
            named = referenced_tables(self.sql)
        except QueryError as exc:
            raise InvalidRequest(str(exc)) from None
        found = sorted(named & set(QUERYABLE))
        if not found:
            raise InvalidRequest(f"the SQL reads none of the tables {', '.join(QUERYABLE)}")
        return sorted(found)

    def queries(self, relations: Mapping[str, str] | None = None) -> dict[str, str]:
        """The SQL of each part of the result, by part name.

        Args:
            relations: what a structured source reads instead of its table's name (a pinned scan).
        """
        if self.sql is not None:
            return {SQL_PART: self.sql}
        return {s.part: _compile(s, (relations or {}).get(s.table, s.table)) for s in self.sources if s.live is None}

    def live_queries(self) -> dict[str, LiveQuery]:
        """The query each live part sends to its source, by part name."""
        return {s.part: _compile_live(s) for s in self.sources if s.live is not None}

    def keys(self, part: str, columns: Sequence[str]) -> list[str]:
        """The columns that identify a row of ``part`` (all its columns when nothing better is known)."""
        if self.sql is None:
            source = next(s for s in self.sources if s.part == part)
            return list(TABLE_KEYS[source.table])
        for candidate in _SQL_KEYS:
            if all(c in columns for c in candidate):
                return list(candidate)
        return list(columns)


def _source(raw: Any, index: int) -> Source:
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"source {index} must be an object with a \"table\"")
    table = raw.get("table")
    live = raw.get("live")
    if live is not None:
        spec = live_table(live, table) if isinstance(live, str) and isinstance(table, str) else None
        if spec is None:
            # Only a configured source's declared tables: never a path, URL or table the request makes up.
            raise InvalidRequest(f"source {index}: live source {live!r} with table {table!r} is not configured; a live "
                                 f"part names one of {', '.join(LIVE_SOURCES)} and one of its tables "
                                 f"({', '.join(t.resource for ts in LIVE_SOURCES.values() for t in ts)})")
        table = spec.name
    elif not isinstance(table, str) or table not in QUERYABLE:
        raise InvalidRequest(f"source {index}: unknown table {table!r}; tables are {', '.join(QUERYABLE)}")
    known = set(_column_types(table))
    columns = raw.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not columns:
            raise InvalidRequest(f"source {index}: \"columns\" must be a non-empty list of column names")
        _check_columns(table, columns, known)
        keys = [k for k in TABLE_KEYS[table] if k not in columns]
        columns = tuple(columns) + tuple(keys)
    filters = []
    for item in raw.get("where", []) or []:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise InvalidRequest(f"source {index}: each condition is [column, op, value], got {item!r}")
        column, op = item[0], str(item[1]).lower()
        if op not in _OPS:
            raise InvalidRequest(f"source {index}: unknown operator {op!r}; use one of {', '.join(sorted(_OPS))}")
        _check_columns(table, [column], known)
        value = item[2] if len(item) == 3 else None
        if op in ("in", "not in") and not isinstance(value, list):
            raise InvalidRequest(f"source {index}: {op!r} needs a list of values")
        filters.append(Filter(column, op, value))
    order_by = raw.get("order_by", []) or []
    for term in order_by:
        parts = str(term).split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
            raise InvalidRequest(f"source {index}: order_by terms are \"column\" or \"column desc\", got {term!r}")
        _check_columns(table, [parts[0]], known)
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidRequest(f"source {index}: \"limit\" must be a non-negative integer")
    name = raw.get("name") or (f"live:{table}" if live is not None else table)
    return Source(table=table, name=str(name), columns=columns, filters=tuple(filters),
                  order_by=tuple(str(t) for t in order_by), limit=limit, live=live)


def _check_columns(table: str, columns: Sequence[Any], known: set[str]) -> None:
    for column in columns:
        if not isinstance(column, str) or column not in known or not _NAME_RE.match(column):
            raise InvalidRequest(f"{table} has no column {column!r}; its columns are {', '.join(sorted(known))}")


@functools.cache
def _column_types(table: str) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in QUERYABLE[table].arrow_schema()}


def _compile(source: Source, relation: str) -> str:
    kinds = _column_types(source.table)
    select = ", ".join(f'"{c}"' for c in source.columns) if source.columns else "*"
    return _select(source, select, relation, [_condition(f, kinds[f.column]) for f in source.filters])


def _select(source: Source, select: str, relation: str, where: list[str]) -> str:
    order = [f'"{t.split()[0]}"' + (" DESC" if t.lower().endswith(" desc") else "") for t in source.order_by]
    # The table's key ends every order, so ties never make the result depend on the engine's mood.
    order += [f'"{k}"' for k in TABLE_KEYS[source.table] if f'"{k}"' not in order]
    sql = f"SELECT {select} FROM {relation}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY " + ", ".join(order)
    if source.limit is not None:
        sql += f" LIMIT {int(source.limit)}"
    return sql


def _compile_live(source: Source) -> LiveQuery:
    """The SQLite query of a live part: checked column names quoted, every value a bound parameter."""
    spec = QUERYABLE[source.table]
    assert isinstance(spec, ExternalTable) and source.live is not None
    kinds = _column_types(source.table)
    params: list[Any] = []
    where = []
    for f in source.filters:
        column = f'"{f.column}"'
        if f.op in ("is null", "is not null"):
            where.append(f"{column} {f.op.upper()}")
        elif f.op in ("in", "not in"):
            values = [_live_value(v, kinds[f.column]) for v in f.value]
            params += values
            marks = ", ".join("?" for _ in values)
            where.append(f"{column} {f.op.upper()} ({marks})" if values else ("0" if f.op == "in" else "1"))
        else:
            params.append(_live_value(f.value, kinds[f.column]))
            where.append(f"{column} {'<>' if f.op == '!=' else f.op} ?")
    select = ", ".join(f'"{c}"' for c in source.columns) if source.columns else ", ".join(
        f'"{c}"' for c in kinds)
    return LiveQuery(source.live, spec.resource, _select(source, select, f'"{spec.resource}"', where), tuple(params))


def _live_value(value: Any, kind: pa.DataType) -> Any:
    if isinstance(value, bool):
        return int(value)
    if pa.types.is_timestamp(kind) and isinstance(value, str):
        # The helpdesk keeps timestamps as SQLAlchemy's SQLite text (UTC): compare like with like.
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"{value!r} is not a time: use ISO 8601, e.g. 2026-01-05T09:00:00Z") from None
        moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def read_live_parts(lake: Lake, request: ContextRequest) -> dict[str, pa.Table]:
    """The records of each live part of ``request``, read from its source now.

    Raises:
        LiveSourceUnavailable: a live part's source cannot be read.
    """
    return {part: read_live(lake.settings, query) for part, query in request.live_queries().items()}


def _condition(f: Filter, kind: pa.DataType) -> str:
    column = f'"{f.column}"'
    if f.op in ("is null", "is not null"):
        return f"{column} {f.op.upper()}"
    if f.op in ("in", "not in"):
        values = ", ".join(_literal(v, kind) for v in f.value)
        return f"{column} {f.op.upper()} ({values})" if values else ("FALSE" if f.op == "in" else "TRUE")
    return f"{column} {'<>' if f.op == '!=' else f.op} {_literal(f.value, kind)}"


def _literal(value: Any, kind: pa.DataType) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float) and not pa.types.is_string(kind):
        return repr(value)
    text = "'" + str(value).replace("'", "''") + "'"
    if pa.types.is_timestamp(kind):
        return f"TIMESTAMPTZ {text}"
    return text


# --- records, hashes, artifacts ----------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def row_digests(table: pa.Table) -> list[bytes]:
    """One sha256 per row, of the row's values in canonical JSON (stable across engines and versions)."""
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [
        hashlib.sha256(orjson.dumps(list(row), default=_default, option=orjson.OPT_SORT_KEYS)).digest()
        for row in zip(*columns, strict=True)
    ] if columns else []


def schema_of(table: pa.Table) -> list[dict[str, str]]:
    """Column names and types, in a form that survives a Parquet round trip (list item names vary)."""
    return [{"name": f.name, "type": _type_name(f.type)} for f in table.schema]


def _type_name(kind: pa.DataType) -> str:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_type_name(kind.value_type)}>"
    if pa.types.is_struct(kind):
        return "struct<" + ", ".join(f"{f.name}: {_type_name(f.type)}" for f in kind) + ">"
    if pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_large_binary(kind):
        return "binary"
    return str(kind)


def records_hash(table: pa.Table) -> str:
    """The hash of a result: its schema and the multiset of its rows (independent of row order)."""
    digest = hashlib.sha256(orjson.dumps(schema_of(table)))
    for row in sorted(row_digests(table)):
        digest.update(row)
    return digest.hexdigest()


def combined_hash(part_hashes: Mapping[str, str]) -> str:
    """The records hash of a whole artifact: of its parts' hashes, by part name."""
    return hashlib.sha256(orjson.dumps(dict(sorted(part_hashes.items())))).hexdigest()


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact's manifest is: its key in the store, full URI and content digest."""

    key: str
    uri: str
    digest: str


def manifest_key(day: str, digest: str) -> str:
    return f"{ARTIFACT_PREFIX}/dt={day}/{digest}.json"


# A run id becomes one folder name of the store once URL-encoded: local file systems cap a name at 255 bytes.
MAX_RUN_ID_BYTES = 255


def check_run_id(run_id: str) -> None:
    """Refuse a run id that cannot name a folder of the store, before anything is read or written.

    Raises:
        InvalidRequest: the run id is empty, holds ``..``, or is longer than a folder name can be.
    """
    if not run_id.strip() or run_id.strip(".") == "":
        raise InvalidRequest(f"run id {run_id!r} is empty or only dots; give the id of an agent run")
    if ".." in run_id:
        raise InvalidRequest(f"run id {run_id[:80]!r} holds '..', which a store key must not; give the id of an "
                             "agent run without it")
    if (size := len(urllib.parse.quote(run_id, safe=""))) > MAX_RUN_ID_BYTES:
        raise InvalidRequest(f"run id {run_id[:40]!r}... is {len(run_id):,} characters ({size:,} bytes in a store "
                             f"key); give one of at most {MAX_RUN_ID_BYTES} bytes URL-encoded")


def run_prefix(run_id: str) -> str:
    return f"{ARTIFACT_PREFIX}/runs/{urllib.parse.quote(run_id, safe='')}/"


def _put_content_addressed(store: ObjectStore, key: str, data: bytes, sha: str) -> None:
    try:
        store.put_once(key, data)
    except AlreadyExists:
        # Same address, so the same bytes, unless someone altered the stored file.
        existing = hashlib.sha256(store.get(key)).hexdigest()
        if existing != sha:
            raise ArtifactTampered(key, sha, existing) from None


def write_artifact(store: ObjectStore, manifest: dict[str, Any], parts: Mapping[str, pa.Table], *,
                   signing_key: SecretStr | None = None) -> ArtifactRef:
    """Write the records, then the manifest (write-once, addressed by its sha256), then the run's pointer.

    With a signing key, the manifest carries its HMAC (:mod:`agentlake.storage.signing`).

    Raises:
        AlreadyExists: the manifest's key is taken: an artifact is never overwritten.
    """
    for name, table in parts.items():
        data = _parquet_bytes(table)
        sha = hashlib.sha256(data).hexdigest()
        key = f"{ARTIFACT_PREFIX}/records/{sha}.parquet"
        _put_content_addressed(store, key, data, sha)
        manifest["parts"][name].update({"key": key, "sha256": sha, "bytes": len(data)})
    manifest = signed(signing_key, manifest)
    body = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    digest = hashlib.sha256(body).hexdigest()
    key = manifest_key(manifest["created_at"][:10], digest)
    store.put_once(key, body)
    stamp = manifest["created_at"].replace("-", "").replace(":", "").replace(".", "")
    pointer = f"{run_prefix(manifest['run_id'])}{stamp}-{digest[:16]}"
    store.put_once(pointer, key.encode())
    return ArtifactRef(key=key, uri=store.uri(key), digest=digest)


@dataclass
class Artifact:
    """A loaded artifact: its manifest and, per part, its records (None if its file is altered or missing)."""

    ref: ArtifactRef
    manifest: dict[str, Any]
    records: dict[str, pa.Table | None]
    problems: list[str] = field(default_factory=list)

    @property
    def request(self) -> ContextRequest:
        return ContextRequest.from_spec(self.manifest["request"])

    @property
    def pins(self) -> Pins:
        return {k: (int(v) if v is not None else None) for k, v in self.manifest["pins"].items()}


def artifact_keys(store: ObjectStore, ref: str) -> list[str]:
    """The manifest keys ``ref`` names: an artifact's URI or key, or a run id (all its artifacts).

    Raises:
        ArtifactNotFound: nothing matches.
    """
    marker = ARTIFACT_PREFIX + "/dt="
    if marker in ref:
        key = ref[ref.index(marker):]
        if not _MANIFEST_KEY_RE.match(key):
            raise ArtifactNotFound(
                f"{ref!r} is not an artifact's address ({ARTIFACT_PREFIX}/dt=YYYY-MM-DD/<sha256>.json); give it as "
                "printed by `agentlake context build`, or a run id"
            )
        return [key]
    check_run_id(ref)
    pointers = store.list(run_prefix(ref))
    if not pointers:
        raise ArtifactNotFound(
            f"no context artifact for {ref!r}: give an artifact URI or key ({ARTIFACT_PREFIX}/dt=.../<sha256>.json) "
            "as printed by `agentlake context build`, or the id of a run that built one"
        )
    return [store.get(p.key).decode() for p in pointers]


def load_artifact(store: ObjectStore, key: str) -> Artifact:
    """Read an artifact and check every file against the hash its address or manifest records.

    Altered files are reported in ``Artifact.problems`` (naming the file), not raised.

    Raises:
        ArtifactNotFound: no manifest at ``key``.
        ArtifactTampered: the manifest itself was altered (then nothing in it can be trusted).
    """
    try:
        body = store.get(key)
    except ObjectNotFound:
        raise ArtifactNotFound(f"no context artifact at {key!r}; `agentlake replay RUN_ID` finds a run's artifacts") from None
    digest = key.rsplit("/", 1)[-1].removesuffix(".json")
    actual = hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise ArtifactTampered(key, digest, actual)
    manifest = orjson.loads(body)
    artifact = Artifact(ArtifactRef(key, store.uri(key), digest), manifest, {})
    for name, part in manifest["parts"].items():
        try:
            data = store.get(part["key"])
        except ObjectNotFound:
            artifact.problems.append(f"records file {part['key']} of part {name!r} is missing")
            artifact.records[name] = None
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha != part["sha256"]:
            artifact.problems.append(str(ArtifactTampered(part["key"], part["sha256"], sha)))
            artifact.records[name] = None
            continue
        table = pq.read_table(io.BytesIO(data))
        if records_hash(table) != part["records_hash"]:
            artifact.problems.append(f"records file {part['key']} of part {name!r} does not hash to its recorded "
                                     "records hash")
            artifact.records[name] = None
            continue
        artifact.records[name] = table
    return artifact


# --- execution ---------------------------------------------------------------------------------


class ContextEngine:
    """An embedded DuckDB with the Iceberg reader loaded, reused across requests of one process.

    Not thread-safe: use one engine per thread.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._con: duckdb.DuckDBPyConnection | None = None
        self._tables: dict[str, Table] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = open_connection(self.lake, profiling=True)
        return self._con

    def tables(self, names: Sequence[str]) -> dict[str, Table]:
        """Handles on the tables as they are now.

        A handle is reused while the catalog still points at its metadata file (one indexed
        lookup): parsing metadata.json is what costs.
        """
        out = {}
        for name in names:
            cached = self._tables.get(name)
            location = self._metadata_location(name)
            if location is None:
                continue  # an ext table never loaded: pinned to None, it reads as empty
            if cached is None or cached.metadata_location != location:
                cached = self._tables[name] = self.lake.table(name)
            out[name] = cached
        return out

    def _metadata_location(self, name: str) -> str | None:
        catalog = self.lake.catalog
        namespace, _, table_name = name.partition(".")
        with Session(catalog.engine) as session:
            location = session.scalar(
                select(IcebergTables.metadata_location).where(
                    IcebergTables.catalog_name == catalog.name,
                    IcebergTables.table_namespace == namespace,
                    IcebergTables.table_name == table_name,
                )
            )
        return str(location) if location is not None else None

    def run(
        self, request: ContextRequest, pins: Pins, tables: dict[str, Table] | None = None, *, plan: bool = True,
        locations: Locations | None = None,
    ) -> tuple[dict[str, pa.Table], dict[str, str]]:
        """Execute the request on the snapshots ``pins``; returns records and executed plans by part.

        SQL reads views fixed to the pins; a structured source reads its pinned scan directly.
        A snapshot expired from its table is read through the metadata file its pin names.

        Args:
            locations: metadata files to read some snapshots through (an as-of read older than the table).

        Raises:
            SnapshotGone: a pinned snapshot can no longer be read.
            InvalidRequest: the SQL is not one read-only statement, or DuckDB rejected it.
        """
        con = self.con
        tables = dict(tables or {})
        for name, pinned in pins.items():
            if name not in tables and pinned is not None:
                tables[name] = self.lake.table(name)
        relations: dict[str, str] = {}
        if request.sql is not None:
            # Only the pinned tables are visible: a view left by an earlier request never answers.
            for name in QUERYABLE:
                if name not in pins:
                    con.execute(f"DROP VIEW IF EXISTS {name}")
            attach(con, self.lake, pins, tables, locations)
        else:
            empty: Pins = {name: sid for name, sid in pins.items() if sid is None}
            attach(con, self.lake, empty, tables)
            for name, snapshot_id in pins.items():
                if snapshot_id is not None:
                    relations[name] = scan_expression(self.lake, tables[name], name, snapshot_id,
                                                      (locations or {}).get(name))
        records: dict[str, pa.Table] = {}
        plans: dict[str, str] = {}
        for name, sql in request.queries(relations).items():
            try:
                if request.sql is not None:  # a structured source compiles to SQL of AgentLake's own
                    check_read_only(sql)
                records[name] = con.execute(sql).fetch_arrow_table()
                if plan:
                    # The plan as executed (operators, pushed-down filters, rows), from DuckDB's profiler.
                    plans[name] = con.get_profiling_information(format="query_tree")
            except QueryError as exc:
                raise InvalidRequest(str(exc)) from None
            except duckdb.Error as exc:
                raise InvalidRequest(f"the request's query failed: {first_line(exc)}") from None
        return records, plans

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


@dataclass
class ContextResult:
    """What assembly returns to the agent: the records, and the artifact that keeps them."""

    artifact: ArtifactRef
    manifest: dict[str, Any]
    records: dict[str, pa.Table]

    @property
    def uri(self) -> str:
        return self.artifact.uri

    def to_polars(self) -> dict[str, pl.DataFrame]:
        return {name: _polars(table) for name, table in self.records.items()}

    def to_dicts(self) -> dict[str, list[dict[str, Any]]]:
        return {name: table.to_pylist() for name, table in self.records.items()}


def _polars(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


@functools.cache
def platform_version() -> str:
    try:
        return importlib_metadata.version("agentlake")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise InvalidRequest(f"time {moment.isoformat()} has no zone; give it in UTC (…Z) or with an offset")
    return int(moment.timestamp() * 1000)


def parse_time(text: str) -> datetime:
    """An ``--as-of`` time: ISO 8601 with a zone (``2026-11-26T07:15:00Z``), or milliseconds since the epoch.

    Raises:
        InvalidRequest: neither.
    """
    text = text.strip()
    if text.isdigit():
        try:
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRequest(f"{text} ms since the epoch is past any date Python can hold; give a time "
                                 "like 2026-11-26T07:15:00Z") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a time: use ISO 8601 with a zone, e.g. 2026-11-26T07:15:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{text!r} has no zone: add Z (UTC) or an offset like +02:00")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 or 9999-12-31T23:59-14:00 has no UTC date
        raise InvalidRequest(f"{text!r} is outside the dates a time can hold in UTC; give a time between "
                             "0001-01-02T00:00:00Z and 9999-12-30T00:00:00Z") from None


def assemble(
    lake: Lake,
    request: ContextRequest,
    *,
    run_id: str,
    agent_id: str,
    as_of: datetime | None = None,
    engine: ContextEngine | None = None,
    log: LogWriter | None = None,
    now: datetime | None = None,
) -> ContextResult:
    """Assemble a run's context from published data, pin what it read, and keep it as an artifact.

    Args:
        as_of: read the snapshots that were current at this time (default: the current ones).
        engine: a reusable engine (one DuckDB per process saves its start-up per request).
        log: the run's own log writer for the ``context_assembled`` event (default: a new one, closed).
        now: the artifact's creation time (default: the clock).

    Raises:
        InvalidRequest: the request is malformed or its query fails.
        PinFailed: a snapshot could not be pinned.
    """
    if not run_id or not agent_id:
        raise InvalidRequest("a context needs the run id and the agent id it is assembled for")
    check_run_id(run_id)
    created = now or datetime.now(UTC)
    created_ms = to_ms(created)
    owned = engine is None
    engine = engine or ContextEngine(lake)
    try:
        names = request.tables()
        tables = engine.tables(names)
        as_of_ms = to_ms(as_of) if as_of is not None else None
        pins, locations = resolve(lake, names, as_of_ms=as_of_ms, handles=tables)
        # Pin before reading: once the record exists, maintenance keeps the snapshot's files.
        pin_snapshots(lake, pins, created_ms=created_ms, retention=retention_ms(lake.settings.pin_retention_days),
                      tables=tables, locations=locations)
        records, plans = engine.run(request, pins, tables, locations=locations)
        live = request.live_queries()
        try:
            records.update(read_live_parts(lake, request))
        except LiveSourceUnavailable as exc:
            raise LiveSourceFailed(str(exc)) from None
        plans.update({part: f"live {q.source}: {q.sql}" for part, q in live.items()})
    finally:
        if owned:
            engine.close()
    part_hashes = {name: records_hash(table) for name, table in records.items()}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "agent_id": agent_id,
        "created_at": created.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "as_of": as_of.astimezone(UTC).isoformat().replace("+00:00", "Z") if as_of is not None else None,
        "request": request.to_json(),
        "engine": f"duckdb {duckdb.__version__}",
        "plan": plans,
        "pins": pins,
        "record_count": sum(t.num_rows for t in records.values()),
        "records_hash": combined_hash(part_hashes),
        "schema": {name: schema_of(table) for name, table in records.items()},
        "parts": {
            name: {"rows": table.num_rows, "records_hash": part_hashes[name],
                   "keys": request.keys(name, table.column_names),
                   # A live part has no pin: what it asked its source, to ask again on replay.
                   **({"live": {**live[name].to_json(), "fingerprint": live[name].fingerprint}} if name in live else {})}
            for name, table in records.items()
        },
        "platform_version": platform_version(),
    }
    ref = write_artifact(lake.store, manifest, records, signing_key=lake.settings.signing_key)
    _emit(lake, manifest, ref, log)
    return ContextResult(artifact=ref, manifest=manifest, records=records)


def _emit(lake: Lake, manifest: dict[str, Any], ref: ArtifactRef, log: LogWriter | None) -> None:
    event = {
        "event_id": f"context-{ref.digest}",
        "run_id": manifest["run_id"],
        "agent_id": manifest["agent_id"],
        "type": "context_assembled",
        "ts": manifest["created_at"],
        "attributes": {
            "artifact_key": ref.key,
            "artifact_uri": ref.uri,
            "records_hash": manifest["records_hash"],
            "record_count": manifest["record_count"],
            "pins": {k: str(v) if v is not None else None for k, v in manifest["pins"].items()},
        },
    }
    if log is not None:
        log.append(event)
        return
    with LogWriter(lake.store, "context", background_flush=False, signing_key=lake.settings.signing_key) as writer:
        writer.append(event)
