"""The SQL sandbox: every statement AgentLake runs for a user or an agent reads the lake's tables, nothing else.

SQL comes from outside the trust boundary (``agentlake query``, ``context build --sql``, request
specs, replays of stored artifacts), so it is held behind two fences, each enough on its own
for the worst cases:

1. **The connection.** Extensions are loaded from the installed wheels before anything else,
   then external access is switched off except for the warehouse (the tables' data and metadata
   files, read by the views) and a private spill folder; no extension can be installed or
   loaded; the configuration is locked, so no statement can undo any of it. The object store's
   credentials live only in a DuckDB secret, which ``duckdb_secrets()`` redacts.
2. **The statement.** Exactly one ``SELECT`` (so no ``EXPLAIN ANALYZE`` of a write, no ``COPY``,
   ``ATTACH``, ``PRAGMA``, ``SET``, macros or exports). Parsed to DuckDB's own syntax tree, it may
   name only the lake's tables and its own common table expressions as relations, only
   ``range``/``generate_series``/``unnest`` as table functions, and no function that reads
   settings, secrets, files or runs SQL of its own (``query``, ``read_text``, ``current_setting``...).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson

from agentlake.errors import AgentLakeError


class QueryError(AgentLakeError):
    """A query was refused or failed; the message says why."""


class QueryRefused(QueryError):
    """A statement was refused by the SQL sandbox before it ran."""


# Table functions a query may call: they make rows from their arguments and touch nothing else.
_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Functions that read settings, secrets, files or the catalog, or run SQL of their own.
_REFUSED_FUNCTIONS = frozenset({
    "query", "query_table", "current_setting", "getenv", "getvariable", "duckdb_settings", "duckdb_secrets",
    "which_secret", "duckdb_extensions", "glob", "sniff_csv", "load_extension", "install_extension",
    "checkpoint", "force_checkpoint", "export_database", "enable_logging", "disable_logging",
})
_REFUSED_PREFIXES = ("read_", "parquet_", "iceberg_", "duckdb_secret", "sqlite_", "postgres_", "mysql_", "delta_")
_EXTENSIONS = ("avro", "iceberg")
_ALLOWED = "only the lake's tables can be read"
# One parser a process: opening a DuckDB database costs more than parsing a statement.
_PARSER_LOCK = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def sandbox_config() -> dict[str, Any]:
    """The settings a sandboxed connection is opened with: no extension is installed or loaded but the wheels'."""
    # The wheels' extensions are installed into a folder of AgentLake's own (DuckDB's default is under
    # the home directory, which a service account may not have); unsigned ones are refused anyway.
    extensions = Path(tempfile.gettempdir()) / f"agentlake-duckdb-extensions-{os.getuid()}"
    extensions.mkdir(mode=0o700, exist_ok=True)
    return {
        "extension_directory": str(extensions),
        "home_directory": str(extensions),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
    }


def fence(con: duckdb.DuckDBPyConnection, readable: list[str], *, s3: bool, configure: list[str] | None = None,
          secret: Any = None) -> None:
    """Make ``con`` (opened with :func:`sandbox_config`) able to read only under ``readable``.

    The wheels' extensions are loaded first; then everything but ``readable`` on the host or the
    network is closed and the configuration locked.

    Args:
        readable: where the tables' files live (folders or ``s3://`` prefixes).
        s3: load the S3 reader (httpfs) too.
        configure: statements run before the configuration is locked (AgentLake's own, never a user's).
        secret: called with the connection to create the object store's DuckDB secret before locking.
    """
    import duckdb_extensions

    for extension in (*_EXTENSIONS, *(("httpfs",) if s3 else ())):
        duckdb_extensions.import_extension(extension, con=con)  # installs the wheel's build
        con.execute(f"LOAD {extension}")  # autoloading is off: nothing loads later by itself
    if secret is not None:
        secret(con)
    for statement in configure or ():
        con.execute(statement)
    # Spilling goes to a folder of this connection's own, not the working directory.
    spill = tempfile.mkdtemp(prefix="agentlake-duckdb-")
    con.execute("SET temp_directory = ?", [spill])
    folders = [path if path.endswith("/") else path + "/" for path in readable]
    con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def parse_select(sql: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``sql`` if it is exactly one ``SELECT``; nothing is bound or executed.

    Raises:
        QueryRefused: the text is not exactly one SELECT statement.
    """
    with _PARSER_LOCK:
        global _parser
        if _parser is None:
            # Parsing only: an empty in-memory database, never given a table, a setting or the statement to run.
            _parser = duckdb.connect()
        try:
            statements = _parser.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryRefused(f"cannot parse the query: {first_line(exc)}") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            given = f"{len(statements)} statements" if len(statements) != 1 else f"a statement of kind {statements[0].type.name}"
            raise QueryRefused(f"refused {given}: AgentLake runs exactly one SELECT statement (WITH ... SELECT included); "
                               "nothing that writes, attaches, sets, explains or exports")
        row = _parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree: dict[str, Any] = orjson.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise QueryRefused(f"cannot parse the query: {tree.get('error_message', 'not a plain SELECT')}")
    return tree


def referenced_tables(sql: str) -> set[str]:
    """The relations a SELECT names (``namespace.table``, or a bare name), its own CTEs left out.

    Raises:
        QueryRefused: the text is not exactly one SELECT statement.
    """
    tree = parse_select(sql)
    ctes = set(_cte_names(tree))
    return {name for name in (_relation(node) for node in _nodes(tree) if node.get("type") == "BASE_TABLE")
            if name not in ctes}


def check_query(sql: str, relations: set[str]) -> set[str]:
    """Refuse anything but exactly one ``SELECT`` over ``relations`` (``namespace.table`` names).

    Returns:
        The relations of ``relations`` the statement reads (so only those need a view).

    Raises:
        QueryRefused: the statement is not one query, or it names something outside the lake's tables.
    """
    tree = parse_select(sql)
    ctes = set(_cte_names(tree))
    read: set[str] = set()
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            name = _relation(node)
            if node.get("catalog_name") or (name not in relations and name not in ctes):
                raise QueryRefused(f"the query reads {name!r}, which is not a table of the lake: {_ALLOWED} "
                                   f"({', '.join(sorted(relations))})")
            if name in relations:
                read.add(name)
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            called = str(function.get("function_name", "")).lower()
            if called not in _TABLE_FUNCTIONS:
                raise QueryRefused(f"the query calls the table function {called!r}: {_ALLOWED}, by name")
        if "function_name" in node:
            called = str(node["function_name"]).lower()
            if called in _REFUSED_FUNCTIONS or called.startswith(_REFUSED_PREFIXES):
                raise QueryRefused(f"the query calls {called}(), which reads outside the lake's tables: {_ALLOWED}")
    return read


def _relation(node: dict[str, Any]) -> str:
    schema, table = node.get("schema_name") or "", str(node.get("table_name") or "")
    return f"{schema}.{table}".lower() if schema else table.lower()


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _cte_names(tree: Any) -> Iterator[str]:
    for node in _nodes(tree):
        for entry in (node.get("cte_map") or {}).get("map") or ():
            if isinstance(entry, dict) and "key" in entry:
                yield str(entry["key"])


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB adds the statement and a caret on further lines)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
