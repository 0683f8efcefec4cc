"""dbt-duckdb plugin: dbt's connection reads the lake's tables the way AgentLake's own queries do.

- The connection is opened with the SQL sandbox's settings and fenced like a query's
  (:func:`agentlake.context.query.fence_lake`): the iceberg and avro extensions come from the
  installed wheels (no network), external access is closed except for the warehouse, and the
  configuration is locked. The marts database file itself is the connection's own database.
- Each source reads exactly the snapshot the Dagster asset pinned (the ``agentlake_pins`` var). A
  source not pinned (a plain ``dbt build`` in this folder) reads the table macro
  ``agentlake_current_<namespace>_<table>()`` defined here when the connection opens: the table's
  current snapshot, resolved once, so every model of the run reads the same version.
"""

from __future__ import annotations

import os
from typing import Any

from dbt.adapters.duckdb.credentials import DuckDBCredentials
from dbt.adapters.duckdb.plugins import BasePlugin
from duckdb import DuckDBPyConnection

from agentlake.config import Settings
from agentlake.context.query import fence_lake, resolve, scan_expression
from agentlake.context.sandbox import sandbox_config
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, FACT_TABLES, TableDef

SOURCE_TABLES = (EVENTS, *FACT_TABLES)
# DuckDB's names for the tables' column kinds (agentlake.tables.schemas), for an empty table's columns.
_DUCKDB_TYPES = {
    "string": "VARCHAR", "json": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMPTZ",
    "binary": "BLOB", "documents": "STRUCT(id VARCHAR, score DOUBLE)[]",
}


def macro_name(tdef: TableDef) -> str:
    return "agentlake_current_" + tdef.name.replace(".", "_")


def empty_relation(tdef: TableDef) -> str:
    """A query with the table's columns and no rows: what a table never written reads as."""
    columns = ", ".join(f"CAST(NULL AS {_DUCKDB_TYPES[kind]}) AS {name}" for name, kind, _, _ in tdef.columns)
    return f"SELECT {columns} LIMIT 0"


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.home = str(plugin_config["home"])

    def update_connection_config(self, creds: DuckDBCredentials, config: dict[str, Any]) -> None:
        config.update(sandbox_config())

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        # The profile passes AGENTLAKE_HOME (or its default); the other settings come from the environment.
        lake = Lake(Settings.from_env({**os.environ, "AGENTLAKE_HOME": self.home}))
        handles = {t.name: lake.table(t.name) for t in SOURCE_TABLES}
        pins, _ = resolve(lake, list(handles), handles=handles)
        macros = []
        for tdef in SOURCE_TABLES:
            snapshot_id = pins[tdef.name]
            body = (empty_relation(tdef) if snapshot_id is None else
                    "SELECT * FROM " + scan_expression(lake, handles[tdef.name], tdef.name, snapshot_id))
            macros.append(f"CREATE OR REPLACE MACRO {macro_name(tdef)}() AS TABLE {body}")
        fence_lake(conn, lake, configure=macros)  # the macros bind iceberg_scan: after the extensions load
