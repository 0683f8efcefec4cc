"""Read-only SQL over the published tables, by name (``raw.events``, ``facts.tool_calls``, ``ext.tickets``, ...).

DuckDB's own Iceberg reader scans the tables at the snapshot current when the query starts,
so a query sees one consistent version of each table, and another engine than pyiceberg
checks that the tables are valid Iceberg. A query can also read the snapshots that were
current at an earlier time (``as_of_ms``: time travel) or exactly the snapshots a context
artifact pinned; filters are pushed down into the scan, so data files whose column bounds
exclude them are never opened.

A snapshot is read through any metadata file that holds it: the table's current one while the
snapshot is in it; after expiry removed it, the metadata file its pin record names
(:mod:`agentlake.context.pins`), or for an as-of time the file that was current then (:mod:`agentlake.context.asof`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from pyiceberg.table import Table

from agentlake.context.asof import holds_snapshot, read_metadata, snapshot_at
from agentlake.context.pins import pin_in_force
from agentlake.context.sandbox import QueryError, check_query, fence, first_line, sandbox_config
from agentlake.tables.external import QUERYABLE
from agentlake.tables.lake import Lake


class SnapshotGone(QueryError):
    """A snapshot can no longer be read: it expired from its table and no pin keeps it, or its pin ran out."""

    def __init__(self, table: str, snapshot_id: int, reason: str | None = None) -> None:
        reason = reason or (
            "it expired from the table's metadata and no context artifact pinned it; a snapshot pinned by an "
            "artifact stays readable for the pin retention (AGENTLAKE_PIN_RETENTION_DAYS)"
        )
        super().__init__(f"snapshot {snapshot_id} of {table} is gone: {reason}")
        self.table = table
        self.snapshot_id = snapshot_id


Pins = dict[str, int | None]
# Per table, a metadata file to read its pinned snapshot through (when not the table's current one).
Locations = dict[str, str]


def open_connection(lake: Lake, *, profiling: bool = False) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection (:mod:`agentlake.context.sandbox`) with the Iceberg reader loaded.

    It reads the warehouse only (and the object store only when the store is S3).

    Args:
        profiling: keep each query's executed plan (the context engine records it in artifacts).
    """
    con = duckdb.connect(config=sandbox_config())
    fence_lake(con, lake, profiling=profiling)
    return con


def fence_lake(con: duckdb.DuckDBPyConnection, lake: Lake, *, profiling: bool = False,
               configure: list[str] | None = None) -> None:
    """Fence ``con`` (opened with :func:`~agentlake.context.sandbox.sandbox_config`) to the lake's tables,
    as :func:`open_connection` does; dbt's connection over the marts database is fenced this way too.

    Args:
        configure: AgentLake's own statements, run once the Iceberg reader is loaded and before the lock.
    """
    # Parquet footers are immutable (Iceberg never rewrites a file): caching them is safe.
    configure = ["SET parquet_metadata_cache = true", *(configure or ())]
    if profiling:
        configure.append("PRAGMA enable_profiling = 'no_output'")
    s3 = lake.settings.s3 is not None
    fence(con, [_warehouse_path(lake)], s3=s3, configure=configure,
          secret=(lambda c: _s3_secret(c, lake)) if s3 else None)


def _warehouse_path(lake: Lake) -> str:
    uri = lake.settings.warehouse_uri
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def resolve(
    lake: Lake, tables: list[str] | None = None, *, as_of_ms: int | None = None,
    handles: dict[str, Table] | None = None,
) -> tuple[Pins, Locations]:
    """The snapshot of ``main`` of each table now, or the one that was current at ``as_of_ms``, with
    the metadata file to read each snapshot through when the table's current metadata no longer
    holds it (an as-of time older than its live snapshots). A table with no snapshot (then) is
    pinned to None: it reads as empty.

    Args:
        handles: tables already loaded (else each is loaded from the catalog).
    """
    pins: Pins = {}
    locations: Locations = {}
    for name in tables if tables is not None else list(QUERYABLE):
        found_table = (handles or {}).get(name) or lake.find_table(name)
        if found_table is None:  # an ext table never loaded: it reads as empty
            pins[name] = None
            continue
        table = found_table
        if as_of_ms is None:
            snapshot = table.current_snapshot()
            pins[name] = snapshot.snapshot_id if snapshot else None
            continue
        found = snapshot_at(lake, table, as_of_ms)
        pins[name] = found.snapshot_id
        if found.snapshot_id is not None and found.metadata_location != table.metadata_location:
            assert found.metadata_location is not None
            locations[name] = found.metadata_location
    return pins, locations


def snapshot_location(lake: Lake, table: Table, name: str, snapshot_id: int) -> str:
    """A metadata file through which ``snapshot_id`` of ``table`` can be read.

    The table's current metadata file while it holds the snapshot; else the one named by the
    snapshot's pin record, as long as the snapshot's files are still there.

    Raises:
        SnapshotGone: the snapshot expired and was never pinned, or its pin ran out and its files are deleted.
    """
    if table.snapshot_by_id(snapshot_id) is not None:
        return table.metadata_location
    pin = pin_in_force(lake, name, snapshot_id)
    if pin is None:
        raise SnapshotGone(name, snapshot_id)
    if pin.table_uuid and pin.table_uuid != str(table.metadata.table_uuid):
        raise SnapshotGone(name, snapshot_id, "the table was dropped and created again since the snapshot was pinned")
    return _readable(table, name, snapshot_id, pin.metadata_location, pin_expires_ms=pin.expires_ms)


def _readable(table: Table, name: str, snapshot_id: int, location: str, *, pin_expires_ms: int | None = None) -> str:
    """``location`` if it holds the snapshot and the snapshot's manifest list still exists."""
    try:
        metadata = read_metadata(table.io, location)
    except FileNotFoundError:
        raise SnapshotGone(name, snapshot_id, f"the metadata file {location} that holds it is missing") from None
    entry = holds_snapshot(metadata, snapshot_id)
    if entry is None:
        raise SnapshotGone(name, snapshot_id, f"the metadata file {location} does not hold it")
    if not table.io.new_input(str(entry["manifest-list"])).exists():
        ran_out = ""
        if pin_expires_ms is not None:
            ran_out = f"its pin ran out (it held until {datetime.fromtimestamp(pin_expires_ms / 1000, UTC).isoformat()}) and "
        raise SnapshotGone(name, snapshot_id, f"{ran_out}table maintenance deleted its files after the pin retention "
                           "(AGENTLAKE_PIN_RETENTION_DAYS)")
    return location


def attach(
    con: duckdb.DuckDBPyConnection, lake: Lake, pins: Pins, tables: dict[str, Table] | None = None,
    locations: Locations | None = None,
) -> None:
    """(Re)create a view per pinned table in ``con``, reading exactly its pinned snapshot.

    Args:
        tables: handles already loaded (else each table is loaded from the catalog).
        locations: metadata files to read some snapshots through (see :func:`resolve`).

    Raises:
        SnapshotGone: a pinned snapshot can no longer be read.
    """
    for name, snapshot_id in pins.items():
        tdef = QUERYABLE[name]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {tdef.namespace}")
        if snapshot_id is None:  # a table never written (then): an empty relation with its columns
            empty_name = f"empty_{name.replace('.', '_')}"
            con.register(empty_name, tdef.arrow_schema().empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {empty_name}")
            continue
        table = (tables or {}).get(name) or lake.table(name)
        scan = scan_expression(lake, table, name, snapshot_id, (locations or {}).get(name))
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {scan}")


def scan_expression(lake: Lake, table: Table, name: str, snapshot_id: int, location: str | None = None) -> str:
    """DuckDB's Iceberg scan of exactly one snapshot of ``table``.

    Args:
        location: a metadata file known to hold the snapshot (else see :func:`snapshot_location`).

    Raises:
        SnapshotGone: the snapshot can no longer be read.
    """
    if location is None or location == table.metadata_location:
        location = snapshot_location(lake, table, name, snapshot_id)
    else:
        location = _readable(table, name, snapshot_id, location)
    return f"iceberg_scan({sql_literal(location)}, snapshot_from_id => {int(snapshot_id)})"


def connect(
    lake: Lake, *, as_of_ms: int | None = None, pins: Pins | None = None
) -> tuple[duckdb.DuckDBPyConnection, Pins]:
    """A DuckDB connection with a view per table, pinned to a snapshot of each table.

    Args:
        as_of_ms: read the snapshots that were current at this time (ms since the epoch).
        pins: read exactly these snapshots ``{table: snapshot_id}`` (other tables: current).

    Returns:
        The connection, and the pins ``{table: snapshot_id}`` its views read.
    """
    con = open_connection(lake)
    resolved, locations = resolve(lake, as_of_ms=as_of_ms)
    for name in pins or {}:
        locations.pop(name, None)
    resolved.update(pins or {})
    attach(con, lake, resolved, locations=locations)
    return con, resolved


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal: quoted, its quotes doubled, so no value can end it early."""
    return "'" + value.replace("'", "''") + "'"


def _s3_secret(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    # DuckDB's CREATE SECRET takes no prepared parameters: every value goes in as an escaped literal.
    s3 = lake.settings.s3
    assert s3 is not None
    parts = ["TYPE s3", f"REGION {sql_literal(s3.region)}"]
    if s3.access_key_id:
        parts.append(f"KEY_ID {sql_literal(s3.access_key_id.get_secret_value())}")
    if s3.secret_access_key:
        parts.append(f"SECRET {sql_literal(s3.secret_access_key.get_secret_value())}")
    if s3.session_token:
        parts.append(f"SESSION_TOKEN {sql_literal(s3.session_token.get_secret_value())}")
    if s3.endpoint:
        scheme, _, host = s3.endpoint.partition("://")
        parts += [f"ENDPOINT {sql_literal(host)}", "URL_STYLE 'path'",
                  f"USE_SSL {'true' if scheme == 'https' else 'false'}"]
    con.execute(f"CREATE OR REPLACE SECRET agentlake_s3 ({', '.join(parts)})")


def query(lake: Lake, sql: str, *, as_of_ms: int | None = None) -> pa.Table:
    """Run one read-only SQL statement over the tables (as they were at ``as_of_ms``, if given).

    Only the tables the statement names are resolved and given a view, each at the snapshot
    current when the query starts (or at ``as_of_ms``). The sandboxed connection is reused from
    a small pool of the lake's own (loading the Iceberg reader into a new DuckDB database costs
    more than most audit queries): one query at a time on each, its views replaced for every query.

    Raises:
        QueryError: the statement is not a query, or DuckDB rejected it.
    """
    names = sorted(check_read_only(sql))  # refused before any table is opened
    _ = lake.catalog  # a lake whose catalog cannot be reached answers nothing, even a query naming no table
    handles = {name: table for name in names if (table := lake.find_table(name)) is not None}
    pins, locations = resolve(lake, names, as_of_ms=as_of_ms, handles=handles)
    with _pooled_connection(lake) as con:
        attach(con, lake, pins, handles, locations)
        return _execute(con, sql)


_POOL_LOCK = threading.Lock()
# Idle sandboxed connections, per lake; a connection is out of the pool while a query runs on it.
_POOL: weakref.WeakKeyDictionary[Lake, list[duckdb.DuckDBPyConnection]] = weakref.WeakKeyDictionary()
_POOL_IDLE_MAX = 4


@contextmanager
def _pooled_connection(lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    with _POOL_LOCK:
        idle = _POOL.setdefault(lake, [])
        con = idle.pop() if idle else None
    if con is None:
        con = open_connection(lake)
    try:
        yield con
    except BaseException:
        con.close()  # a connection whose query failed is not handed out again
        raise
    with _POOL_LOCK:
        idle = _POOL.setdefault(lake, [])
        if len(idle) < _POOL_IDLE_MAX:
            idle.append(con)
            return
    con.close()


def run_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run ``sql`` on ``con`` if it is exactly one read-only statement.

    Raises:
        QueryError: the statement is not a query, or DuckDB rejected it.
    """
    check_read_only(sql)
    return _execute(con, sql)


def _execute(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """``sql``, already checked by :func:`check_read_only`, on ``con``."""
    try:
        return con.execute(sql).fetch_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"{first_line(exc)}; tables are {', '.join(QUERYABLE)}") from None


def check_read_only(sql: str) -> set[str]:
    """Refuse anything but exactly one SELECT over the lake's tables (see :mod:`agentlake.context.sandbox`).

    Returns:
        The lake's tables the statement reads.

    Raises:
        QueryRefused: the statement is not one query over the lake's tables.
    """
    return check_query(sql, set(QUERYABLE))
