"""Dagster resources: the lake (object store, log, catalog) as configured for this deployment."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import SecretStr
from pyiceberg.catalog.sql import SqlCatalog

from agentlake.config import S3Settings, Settings, setting_default
from agentlake.log.reader import LogReader
from agentlake.storage.catalog import open_catalog
from agentlake.storage.store import ObjectStore


class LakeResource(ConfigurableResource):
    """Where AgentLake's data lives: on the embedded default, a local folder under ``home``.

    An S3 deployment uses ``S3LakeResource`` (platform_defs/s3.py), which adds the bucket and
    dagster-aws's ``S3Resource``. It lives in its own module so that the embedded default never
    imports dagster-aws and boto3: every run process imports these definitions, and those two
    imports cost seconds of freshness per run.

    ``catalog_uri`` may carry a password: it is given as ``EnvVar("AGENTLAKE_CATALOG_URI")``
    (platform_defs/environment.py), so the UI shows the variable's name and the value is
    resolved only in the run.
    """

    home: str
    catalog_uri: str | None = None
    ingest_interval_s: int = setting_default("ingest_interval_s")
    dedup_window_days: int = setting_default("dedup_window_days")

    def s3_settings(self) -> S3Settings | None:
        return None

    def settings(self) -> Settings:
        """The deployment's settings: this resource's fields over the environment's tuning."""
        s3 = self.s3_settings()
        return Settings.from_env().model_copy(update={
            "home": Path(self.home), "store": "s3" if s3 else "local", "s3": s3,
            "catalog_uri": SecretStr(self.catalog_uri) if self.catalog_uri else None,
            "ingest_interval_s": self.ingest_interval_s, "dedup_window_days": self.dedup_window_days,
        })

    def object_store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings())

    def log_reader(self) -> LogReader:
        settings = self.settings()
        return LogReader(ObjectStore.from_settings(settings), signing_key=settings.signing_key,
                         previous_keys=settings.previous_signing_keys)

    def catalog(self) -> SqlCatalog:
        return open_catalog(self.settings())
