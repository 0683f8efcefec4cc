"""An opened AgentLake deployment: object store, log reader, Iceberg catalog and tables."""

from __future__ import annotations

from functools import cached_property

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from agentlake.config import Settings
from agentlake.log.reader import LogReader
from agentlake.storage.catalog import open_catalog
from agentlake.storage.store import ObjectStore
from agentlake.tables.schemas import ALL_TABLES, SOURCE_TABLES, ensure_tables


class Lake:
    """Everything ingestion, queries and reconciliation need, opened lazily from settings."""

    def __init__(self, settings: Settings, *, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self._store = store

    @cached_property
    def store(self) -> ObjectStore:
        return self._store or ObjectStore.from_settings(self.settings)

    @cached_property
    def log(self) -> LogReader:
        return LogReader(self.store, signing_key=self.settings.signing_key,
                         previous_keys=self.settings.previous_signing_keys)

    @cached_property
    def catalog(self) -> SqlCatalog:
        catalog = open_catalog(self.settings)
        ensure_tables(catalog, ALL_TABLES + SOURCE_TABLES)
        return catalog

    def table(self, name: str) -> Table:
        """A fresh handle on a table (its current metadata, read now)."""
        return self.catalog.load_table(name)

    def find_table(self, name: str) -> Table | None:
        """A fresh handle on a table, or None if it does not exist yet (an ``ext`` table before its first load)."""
        try:
            return self.catalog.load_table(name)
        except NoSuchTableError:
            return None
