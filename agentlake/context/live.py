"""Live parts of a context request: a configured SQL source read directly, with the request's filters run in it.

Context that must be fresh (a ticket's status now) can be read from the source itself instead of
its loaded ``ext`` table. Such a part has no snapshot to pin, so the artifact keeps its exact
records and a **fingerprint** of the query (the source's name, the SQL sent to it and its bound
parameters); a replay runs the same query again and says whether the source still returns the
captured records.

Only the live sources of :data:`agentlake.tables.external.LIVE_SOURCES` can be read, at the
database file the configuration names, and only through SQL that AgentLake compiles from checked
column names with every value a bound parameter. The query runs inside SQLite (DuckDB's
``sqlite_query`` with ``params``, from the ``sqlite_scanner`` wheel, no download), so the filters
use the source's own indexes. The connection is sandboxed like the lake's: external access off
except for that one file, attached read-only, configuration locked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from agentlake.config import Settings
from agentlake.context.sandbox import first_line, sandbox_config
from agentlake.tables.external import LiveSourceUnavailable, live_database

_ALIAS = "live_source"


@dataclass(frozen=True)
class LiveQuery:
    """The query a live part sends to its source: which source and table, the SQL and its bound parameters."""

    source: str
    table: str
    sql: str
    params: tuple[Any, ...]

    @property
    def fingerprint(self) -> str:
        """sha256 of the source, table, SQL and parameters: the same query, the same fingerprint."""
        return hashlib.sha256(orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "table": self.table, "sql": self.sql, "params": list(self.params)}


def read_live(settings: Settings, query: LiveQuery) -> pa.Table:
    """Run ``query`` in its live source's database, read-only; return its rows.

    Raises:
        LiveSourceUnavailable: the source's database cannot be read (not SQLite, missing, or it refused the query).
    """
    path = str(live_database(settings, query.source))
    con = duckdb.connect(config=sandbox_config())
    try:
        import duckdb_extensions

        duckdb_extensions.import_extension("sqlite_scanner", con=con)
        con.execute("LOAD sqlite_scanner")
        con.execute("SET allowed_paths = ?", [[path]])
        con.execute("SET enable_external_access = false")
        con.execute(f"ATTACH {_literal(path)} AS {_ALIAS} (TYPE sqlite, READ_ONLY)")
        con.execute("SET lock_configuration = true")
        # sqlite_query binds BIGINT, DOUBLE and VARCHAR (not DuckDB's default INTEGER): each parameter is cast.
        marks = ", ".join(f"CAST(? AS {_param_type(v)})" for v in query.params)
        params = f", params => row({marks})" if query.params else ""
        return con.execute(f"SELECT * FROM sqlite_query('{_ALIAS}', {_literal(query.sql)}{params})",
                           list(query.params)).to_arrow_table()
    except duckdb.Error as exc:
        raise LiveSourceUnavailable(f"live source {query.source}: reading {query.table} failed: {first_line(exc)}; "
                                    "check that its database is there and readable") from None
    finally:
        con.close()


def _param_type(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return "BIGINT"
    return "DOUBLE" if isinstance(value, float) else "VARCHAR"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
