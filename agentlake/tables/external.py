"""The ``ext`` tables: external sources' tables published into the lake, and the sources a request may read live.

The sources layer loads these tables (:mod:`agentlake.sources.external`); queries and context
assembly, below it, read them by name like the lake's own tables. Their columns are declared
here so a request can be checked (and an empty relation given) before the first load; the
table itself is created from the first load's columns, which include these.

A **live source** is a configured source that a context request may read directly, without
loading it first (:mod:`agentlake.context.live`): only the sources named here, only their tables
and declared columns, and only at the database the configuration names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from agentlake.config import Settings
from agentlake.errors import AgentLakeError, ConfigError
from agentlake.tables.schemas import TABLES_BY_NAME, TableDef

if TYPE_CHECKING:
    from collections.abc import Mapping

NAMESPACE = "ext"

_ARROW = {"string": pa.string(), "int": pa.int64(), "timestamp": pa.timestamp("us", tz="UTC")}


@dataclass(frozen=True)
class ExternalTable:
    """One table of a source and the ``ext`` table it is published into."""

    resource: str  # the source's name for it (table or endpoint)
    primary_key: str
    columns: tuple[tuple[str, str, bool, str], ...]  # (name, kind, required, doc), as the published table holds them
    cursor: str = "updated_at"
    deleted: str | None = "is_deleted"  # the source's soft-delete flag: a row set to 1 is removed from ext
    source: str = ""

    @property
    def name(self) -> str:
        return f"{NAMESPACE}.{self.resource}"

    @property
    def namespace(self) -> str:
        return NAMESPACE

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, _ARROW[kind], nullable=True) for n, kind, _required, _doc in self.columns])


TICKETS = ExternalTable("tickets", "ticket_id", (
    ("ticket_id", "string", True, "the helpdesk's ticket id"),
    ("customer_id", "string", True, "the customer who opened it (ext.customers)"),
    ("subject", "string", True, ""),
    ("status", "string", True, "open, pending, solved or closed"),
    ("priority", "string", True, "low, normal, high or urgent"),
    ("opened_at", "timestamp", True, ""),
    ("updated_at", "timestamp", True, "the cursor: when the source last changed the ticket"),
    ("closed_at", "timestamp", False, ""),
    ("is_deleted", "int", True, "always 0 in ext: a row the source deletes is removed"),
), source="helpdesk")
CUSTOMERS = ExternalTable("customers", "customer_id", (
    ("customer_id", "string", True, "the helpdesk's customer id (the tenant of the customer's agent runs)"),
    ("name", "string", True, ""),
    ("plan", "string", True, "free, team, business or enterprise"),
    ("updated_at", "timestamp", True, "the cursor: when the source last changed the customer"),
    ("is_deleted", "int", True, "always 0 in ext: a row the source deletes is removed"),
), source="helpdesk")

TICKET_COMMENTS = ExternalTable("ticket_comments", "comment_id", (
    ("comment_id", "string", True, "the helpdesk's comment id"),
    ("ticket_id", "string", True, "the ticket it is on (ext.tickets)"),
    ("author", "string", True, "customer or agent"),
    ("body", "string", True, ""),
    ("updated_at", "timestamp", True, "the cursor: when the source last changed the comment"),
    ("is_deleted", "int", True, "always 0 in ext: a row the source deletes is removed"),
), source="helpdesk_api")

# ext.documents as the documents source publishes it: one row per version of a document (its key and
# content hash), so the table itself is declared with the lake's own (agentlake.tables.schemas.DOCUMENTS).
DOCUMENT_FILES = ExternalTable("documents", "doc_id", tuple(TABLES_BY_NAME["ext.documents"].columns),
                               deleted=None, source="documents")

EXT_TABLES: tuple[ExternalTable, ...] = (TICKETS, CUSTOMERS, TICKET_COMMENTS)
EXT_TABLES_BY_NAME: dict[str, ExternalTable] = {t.name: t for t in EXT_TABLES}
# Every table a query or a context request may read: the lake's own and the ext tables.
QUERYABLE: Mapping[str, TableDef | ExternalTable] = {**TABLES_BY_NAME, **EXT_TABLES_BY_NAME}

# The sources a context request may read live, and the tables of each it may read.
LIVE_SOURCES: dict[str, tuple[ExternalTable, ...]] = {"helpdesk": (TICKETS, CUSTOMERS)}


class LiveSourceUnavailable(AgentLakeError):
    """A live source's database cannot be read directly (not SQLite, or not there)."""


def live_table(source: str, table: str) -> ExternalTable | None:
    """The declared table ``table`` of the live source ``source`` (None: not configured)."""
    return next((t for t in LIVE_SOURCES.get(source, ()) if table in (t.resource, t.name)), None)


def live_database(settings: Settings, source: str) -> Path:
    """The SQLite database file the live source ``source`` is read from, as the configuration names it.

    Raises:
        LiveSourceUnavailable: the source's URL is not a SQLite file, or the file does not exist.
        ConfigError: ``source`` is not a configured live source.
    """
    if source not in LIVE_SOURCES:
        raise ConfigError(f"{source!r} is not a configured live source; the live sources are {', '.join(LIVE_SOURCES)}")
    url = settings.resolved_sources_sql_url
    if not url.startswith("sqlite:///"):
        # Only the scheme: the URL itself may carry a password.
        raise LiveSourceUnavailable(f"live source {source}: its database ({url.split(':', 1)[0]}) cannot be read live; "
                                    "only a SQLite database can: load it with `agentlake sources load` and read ext.*")
    path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_file():
        raise LiveSourceUnavailable(f"live source {source}: its database {path} does not exist; create it with "
                                    "`agentlake sources demo` or set AGENTLAKE_SOURCES_SQL_URL")
    return path.resolve()
