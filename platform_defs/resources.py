"""Dagster resources: the lake (object store, log, catalog) as configured for this deployment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dagster import ConfigurableResource
from pyiceberg.catalog.sql import SqlCatalog

from agentlake.config import S3Settings, Settings
from agentlake.log.reader import LogReader
from agentlake.storage.catalog import open_catalog
from agentlake.storage.store import ObjectStore


class LakeResource(ConfigurableResource):
    """Where AgentLake's data lives: on the embedded default, a local folder under ``home``.

    An S3 deployment uses ``S3LakeResource`` (platform_defs/s3.py), which adds the bucket and
    dagster-aws's ``S3Resource``. It lives in its own module so that the embedded default never
    imports dagster-aws and boto3: every run process imports these definitions, and those two
    imports cost seconds of freshness per run.
    """

    home: str
    catalog_uri: str | None = None
    ingest_interval_s: int = 60
    dedup_window_days: int = 1

    def s3_settings(self) -> S3Settings | None:
        return None

    def settings(self) -> Settings:
        """The deployment's settings: this resource's fields over the environment's tuning."""
        s3 = self.s3_settings()
        return replace(
            Settings.from_env(), home=Path(self.home), store="s3" if s3 else "local", s3=s3,
            catalog_uri=self.catalog_uri, ingest_interval_s=self.ingest_interval_s,
            dedup_window_days=self.dedup_window_days,
        )

    def object_store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings())

    def log_reader(self) -> LogReader:
        return LogReader(self.object_store())

    def catalog(self) -> SqlCatalog:
        return open_catalog(self.settings())
