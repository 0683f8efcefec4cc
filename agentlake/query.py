"""Read-only SQL over the published tables, by name (``raw.events``, ``facts.tool_calls``, ...).

DuckDB's own Iceberg reader scans the tables at the snapshot current when the query starts,
so a query sees one consistent version of each table, and another engine than pyiceberg
checks that the tables are valid Iceberg. A query can also read the snapshots that were
current at an earlier time (``as_of_ms``: time travel) or exactly the snapshots a context
artifact pinned; filters are pushed down into the scan, so data files whose column bounds
exclude them are never opened.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pyiceberg.table import Table

from agentlake.errors import AgentLakeError
from agentlake.lake import Lake
from agentlake.tables import ALL_TABLES, TABLES_BY_NAME


class QueryError(AgentLakeError):
    """A query was refused or failed; the message says why."""


_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class SnapshotGone(QueryError):
    """A pinned snapshot is no longer in its table's metadata (expired), so it cannot be read."""

    def __init__(self, table: str, snapshot_id: int) -> None:
        super().__init__(
            f"snapshot {snapshot_id} of {table} is gone from the table's metadata (expired); a snapshot "
            "pinned by a context artifact is kept for the pin retention (AGENTLAKE_PIN_RETENTION_DAYS)"
        )
        self.table = table
        self.snapshot_id = snapshot_id


Pins = dict[str, int | None]


def open_connection(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the Iceberg reader loaded (and S3 access when the store is S3)."""
    import duckdb_extensions

    con = duckdb.connect()
    for extension in ("avro", "iceberg"):
        duckdb_extensions.import_extension(extension, con=con)
    if lake.settings.s3 is not None:
        duckdb_extensions.import_extension("httpfs", con=con)
        _s3_secret(con, lake)
    # Parquet footers are immutable (Iceberg never rewrites a file): caching them is safe.
    con.execute("SET parquet_metadata_cache = true")
    return con


def resolve_pins(lake: Lake, tables: list[str] | None = None, *, as_of_ms: int | None = None) -> Pins:
    """The snapshot of ``main`` of each table now, or the one that was current at ``as_of_ms``.

    A table with no snapshot (then) is pinned to None: it reads as empty.
    """
    pins: Pins = {}
    for name in tables or [t.name for t in ALL_TABLES]:
        table = lake.table(name)
        if as_of_ms is None:
            snapshot = table.current_snapshot()
        else:
            snapshot = table.snapshot_as_of_timestamp(as_of_ms)
        pins[name] = snapshot.snapshot_id if snapshot else None
    return pins


def attach(
    con: duckdb.DuckDBPyConnection, lake: Lake, pins: Pins, tables: dict[str, Table] | None = None
) -> None:
    """(Re)create a view per pinned table in ``con``, reading exactly its pinned snapshot.

    Args:
        tables: handles already loaded (else each table is loaded from the catalog).

    Raises:
        SnapshotGone: a pinned snapshot is no longer in its table's metadata.
    """
    for name, snapshot_id in pins.items():
        tdef = TABLES_BY_NAME[name]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {tdef.namespace}")
        if snapshot_id is None:  # a table never written (then): an empty relation with its columns
            empty_name = f"empty_{name.replace('.', '_')}"
            con.register(empty_name, tdef.arrow_schema().empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {empty_name}")
            continue
        table = (tables or {}).get(name) or lake.table(name)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {scan_expression(table, name, snapshot_id)}")


def scan_expression(table: Table, name: str, snapshot_id: int) -> str:
    """DuckDB's Iceberg scan of exactly one snapshot of ``table``.

    Raises:
        SnapshotGone: the snapshot is no longer in the table's metadata.
    """
    if table.snapshot_by_id(snapshot_id) is None:
        raise SnapshotGone(name, snapshot_id)
    location = table.metadata_location.replace("'", "''")
    return f"iceberg_scan('{location}', snapshot_from_id => {int(snapshot_id)})"


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
    resolved = resolve_pins(lake, as_of_ms=as_of_ms)
    resolved.update(pins or {})
    attach(con, lake, resolved)
    return con, resolved


def _s3_secret(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    s3 = lake.settings.s3
    assert s3 is not None
    parts = ["TYPE s3", f"REGION '{s3.region}'"]
    if s3.access_key_id:
        parts.append(f"KEY_ID '{s3.access_key_id}'")
    if s3.secret_access_key:
        parts.append(f"SECRET '{s3.secret_access_key}'")
    if s3.endpoint:
        scheme, _, host = s3.endpoint.partition("://")
        parts += [f"ENDPOINT '{host}'", "URL_STYLE 'path'", f"USE_SSL {'true' if scheme == 'https' else 'false'}"]
    con.execute(f"CREATE OR REPLACE SECRET agentlake_s3 ({', '.join(parts)})")


def query(lake: Lake, sql: str, *, as_of_ms: int | None = None) -> pa.Table:
    """Run one read-only SQL statement over the tables (as they were at ``as_of_ms``, if given).

    Raises:
        QueryError: the statement is not a query, or DuckDB rejected it.
    """
    con, _pins = connect(lake, as_of_ms=as_of_ms)
    return run_read_only(con, sql)


def run_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run ``sql`` on ``con`` if it is exactly one read-only statement.

    Raises:
        QueryError: the statement is not a query, or DuckDB rejected it.
    """
    check_read_only(con, sql)
    try:
        return con.execute(sql).fetch_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"{exc}; tables are {', '.join(t.name for t in ALL_TABLES)}") from None


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but exactly one read-only statement.

    Raises:
        QueryError: the statement is not a query, or cannot be parsed.
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    if len(statements) != 1 or statements[0].type not in _READ_ONLY:
        raise QueryError("agentlake query runs exactly one read-only statement (SELECT, WITH ... SELECT, EXPLAIN)")
