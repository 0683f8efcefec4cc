"""Read-only SQL over the published tables, by name (``raw.events``, ``facts.tool_calls``, ...).

DuckDB's own Iceberg reader scans the tables at the snapshot current when the query starts,
so a query sees one consistent version of each table, and another engine than pyiceberg
checks that the tables are valid Iceberg.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from agentlake.errors import AgentLakeError
from agentlake.lake import Lake
from agentlake.tables import ALL_TABLES


class QueryError(AgentLakeError):
    """A query was refused or failed; the message says why."""


_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def connect(lake: Lake) -> tuple[duckdb.DuckDBPyConnection, dict[str, int | None]]:
    """A DuckDB connection with a view per table, pinned to each table's current snapshot.

    Returns:
        The connection, and the pins ``{table: snapshot_id}`` its views read.
    """
    import duckdb_extensions

    con = duckdb.connect()
    for extension in ("avro", "iceberg"):
        duckdb_extensions.import_extension(extension, con=con)
    settings = lake.settings
    if settings.s3 is not None:
        duckdb_extensions.import_extension("httpfs", con=con)
        _s3_secret(con, lake)
    pins: dict[str, int | None] = {}
    for tdef in ALL_TABLES:
        table = lake.table(tdef.name)
        snapshot = table.current_snapshot()
        pins[tdef.name] = snapshot.snapshot_id if snapshot else None
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {tdef.namespace}")
        if snapshot is None:  # a table never written: an empty relation with its columns
            empty_name = f"empty_{tdef.name.replace('.', '_')}"
            con.register(empty_name, tdef.arrow_schema().empty_table())
            con.execute(f"CREATE VIEW {tdef.name} AS SELECT * FROM {empty_name}")
        else:
            location = table.metadata_location.replace("'", "''")
            con.execute(
                f"CREATE VIEW {tdef.name} AS SELECT * FROM iceberg_scan('{location}', "
                f"snapshot_from_id => {snapshot.snapshot_id})"
            )
    return con, pins


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


def query(lake: Lake, sql: str) -> pa.Table:
    """Run one read-only SQL statement over the tables.

    Raises:
        QueryError: the statement is not a query, or DuckDB rejected it.
    """
    con, _pins = connect(lake)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    if len(statements) != 1 or statements[0].type not in _READ_ONLY:
        raise QueryError("agentlake query runs exactly one read-only statement (SELECT, WITH ... SELECT, EXPLAIN)")
    try:
        return con.execute(sql).fetch_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"{exc}; tables are {', '.join(t.name for t in ALL_TABLES)}") from None
