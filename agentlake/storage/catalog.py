"""The Iceberg SQL catalog: SQLite under AGENTLAKE_HOME by default, any SQLAlchemy URI by configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pyarrow.fs import AwsDefaultS3RetryStrategy
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from agentlake.config import Settings
from agentlake.errors import CatalogUnavailable, ConfigError, redact_credentials

CATALOG_NAME = "agentlake"
# pyiceberg's FileIO (pyarrow's S3 filesystem): attempts per request. Not a setting: pyiceberg
# builds the strategy from its import path, without arguments. Timeouts come from S3Settings.
S3_MAX_ATTEMPTS = 6


class StoreRetryStrategy(AwsDefaultS3RetryStrategy):
    """How pyarrow's S3 filesystem retries for pyiceberg: 5xx, SlowDown, timeouts and resets,
    up to 6 attempts with exponential backoff (50 ms doubling to 0.8 s, 1.6 s in all): longer
    outages are ridden out by the stages (:mod:`agentlake.storage.retry`), which start again from the ledgers.

    pyiceberg builds it from its import path, without arguments (``s3.retry-strategy-impl``).
    """

    def __init__(self, max_attempts: int = S3_MAX_ATTEMPTS) -> None:
        super().__init__(max_attempts=max_attempts)


def describe_catalog(uri: str) -> str:
    """The catalog's address without its credentials (a Postgres URI may carry a password)."""
    parts = urlsplit(uri)
    if parts.scheme.startswith("sqlite"):
        return uri
    host = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "")
    return f"{parts.scheme}://{host}{parts.path}"


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
        props["s3.retry-strategy-impl"] = f"{StoreRetryStrategy.__module__}.{StoreRetryStrategy.__qualname__}"
        props["s3.connect-timeout"] = f"{s3.connect_timeout_s:g}"
        props["s3.request-timeout"] = f"{s3.request_timeout_s:g}"
        # The secrets are unwrapped here only, for the client that needs them.
        if s3.access_key_id:
            props["s3.access-key-id"] = s3.access_key_id.get_secret_value()
        if s3.secret_access_key:
            props["s3.secret-access-key"] = s3.secret_access_key.get_secret_value()
        if s3.session_token:
            props["s3.session-token"] = s3.session_token.get_secret_value()
    return props


def open_catalog(settings: Settings) -> SqlCatalog:
    """Open (and on first use create) the deployment's Iceberg catalog."""
    if settings.catalog_uri is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    if settings.s3 is None:
        settings.store_root.joinpath("warehouse").mkdir(parents=True, exist_ok=True)
    # The URI is never quoted back: in production it carries the catalog's password.
    try:
        return SqlCatalog(CATALOG_NAME, **catalog_properties(settings))
    except NoSuchModuleError as exc:
        raise ConfigError(f"AGENTLAKE_CATALOG_URI names a database this install cannot open ({exc}); "
                          "give a SQLAlchemy URI such as sqlite:////path/catalog.db or postgresql+psycopg2://...") from None
    except ArgumentError:
        raise ConfigError("AGENTLAKE_CATALOG_URI is not a SQLAlchemy URI; give one such as "
                          "sqlite:////path/catalog.db or postgresql+psycopg2://user@host/db") from None
    except OperationalError as exc:  # the database is down, unknown, or refused the credentials
        reason = redact_credentials(str(exc.orig or exc).strip().splitlines()[0])[:300]
        raise CatalogUnavailable(
            f"the Iceberg catalog ({describe_catalog(settings.resolved_catalog_uri)}) could not be opened: {reason}; "
            "check that its database is up and that AGENTLAKE_CATALOG_URI names it with the right user and "
            "password, then run again") from None
    except ModuleNotFoundError as exc:
        raise ConfigError(f"AGENTLAKE_CATALOG_URI needs the database driver {exc.name}, which is not installed; "
                          "install it or name an installed driver in the URI (e.g. postgresql+psycopg2://...)") from None
