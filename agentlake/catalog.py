"""The Iceberg SQL catalog: SQLite under AGENTLAKE_HOME by default, any SQLAlchemy URI by configuration."""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog.sql import SqlCatalog

from agentlake.config import Settings

CATALOG_NAME = "agentlake"


def catalog_properties(settings: Settings) -> dict[str, Any]:
    """pyiceberg properties for the deployment's catalog and its warehouse on the object store."""
    props: dict[str, Any] = {
        "uri": settings.resolved_catalog_uri,
        "warehouse": settings.warehouse_uri,
        "init_catalog_tables": "true",
    }
    if settings.s3 is not None:
        s3 = settings.s3
        props["py-io-impl"] = "pyiceberg.io.pyarrow.PyArrowFileIO"
        props["s3.region"] = s3.region
        if s3.endpoint:
            props["s3.endpoint"] = s3.endpoint
            props["s3.force-virtual-addressing"] = "false"
        if s3.access_key_id:
            props["s3.access-key-id"] = s3.access_key_id
        if s3.secret_access_key:
            props["s3.secret-access-key"] = s3.secret_access_key
        if s3.session_token:
            props["s3.session-token"] = s3.session_token
    return props


def open_catalog(settings: Settings) -> SqlCatalog:
    """Open (and on first use create) the deployment's Iceberg catalog."""
    if settings.catalog_uri is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    if settings.s3 is None:
        settings.store_root.joinpath("warehouse").mkdir(parents=True, exist_ok=True)
    return SqlCatalog(CATALOG_NAME, **catalog_properties(settings))
