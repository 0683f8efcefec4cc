"""Dagster resources: the lake (object store, log, catalog) with S3 settings from dagster-aws."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pyiceberg.catalog.sql import SqlCatalog

from agentlake.catalog import open_catalog
from agentlake.config import S3Settings, Settings
from agentlake.log import LogReader
from agentlake.store import ObjectStore


class LakeResource(ConfigurableResource):
    """Where AgentLake's data lives. With ``s3`` set, the store is that bucket; else a local folder.

    The S3 endpoint and credentials come from dagster-aws's ``S3Resource``, whose fields are
    ``EnvVar``s: the UI shows the variable's name, never its value.
    """

    home: str
    s3_bucket: str | None = None
    s3_prefix: str = ""
    catalog_uri: str | None = None
    ingest_interval_s: int = 60
    dedup_window_days: int = 1
    s3: S3Resource | None = None

    def settings(self) -> Settings:
        s3 = None
        if self.s3_bucket:
            cfg = self.s3 or S3Resource()
            s3 = S3Settings(
                bucket=self.s3_bucket,
                prefix=self.s3_prefix,
                endpoint=cfg.endpoint_url,
                region=cfg.region_name or "us-east-1",
                access_key_id=cfg.aws_access_key_id,
                secret_access_key=cfg.aws_secret_access_key,
                session_token=cfg.aws_session_token,
            )
        return Settings(
            home=Path(self.home), store="s3" if s3 else "local", s3=s3, catalog_uri=self.catalog_uri,
            ingest_interval_s=self.ingest_interval_s, dedup_window_days=self.dedup_window_days,
        )

    def object_store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings())

    def log_reader(self) -> LogReader:
        return LogReader(self.object_store())

    def catalog(self) -> SqlCatalog:
        return open_catalog(self.settings())
