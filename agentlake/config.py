"""Deployment settings, resolved from the environment in exactly one place.

Nothing in AgentLake reads ``os.environ`` except :meth:`Settings.from_env`, and only when
called. The embedded default needs no variable at all; the S3 store needs a bucket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlake.errors import ConfigError

STORE_KINDS = ("local", "s3")

# Every variable AgentLake reads, with what it means (the README's configuration table).
ENV_VARS: dict[str, str] = {
    "AGENTLAKE_HOME": "root folder of the embedded deployment (default ./.agentlake)",
    "AGENTLAKE_STORE": "object store kind: local (default) or s3",
    "AGENTLAKE_S3_BUCKET": "bucket holding the log, artifacts and warehouse (required for s3)",
    "AGENTLAKE_S3_PREFIX": "key prefix inside the bucket (default empty)",
    "AGENTLAKE_S3_ENDPOINT": "endpoint URL of an S3-compatible server (default: AWS S3)",
    "AWS_ACCESS_KEY_ID": "S3 access key (standard AWS variable)",
    "AWS_SECRET_ACCESS_KEY": "S3 secret key (standard AWS variable)",
    "AWS_SESSION_TOKEN": "S3 session token, if any (standard AWS variable)",
    "AWS_REGION": "S3 region (standard AWS variable, default us-east-1)",
    "AGENTLAKE_CATALOG_URI": "SQLAlchemy URI of the Iceberg SQL catalog (default sqlite under AGENTLAKE_HOME)",
    "AGENTLAKE_UI_PORT": "port of the Dagster UI started by `make run` (default 3000, on 127.0.0.1)",
    "AGENTLAKE_DEMO_RATE": "agent runs per second the demo fleet of `make run` emits (default 1; 0 turns it off)",
    "AGENTLAKE_INGEST_INTERVAL_S": "seconds between ingest sensor ticks: at most one commit per table per tick (default 60)",
    "AGENTLAKE_DEDUP_WINDOW_DAYS": "arrival days before and after a segment's own searched for repeated event_ids (default 1)",
    "AGENTLAKE_QUALITY_MAX_QUARANTINE_SHARE": "quality gate: a batch with a larger share of quarantined lines is held (default 0.5)",
    "AGENTLAKE_QUALITY_FUTURE_SKEW_S": "quality gate: seconds an event's ts may be after its segment's arrival (default 3600)",
    "AGENTLAKE_QUALITY_FLEET_EPOCH": "quality gate: events with an earlier ts are quarantined (ISO 8601, default 2024-01-01T00:00:00Z)",
    "AGENTLAKE_STORE_RETRY_S": "seconds an ingest keeps retrying while the object store fails before it gives up (default 300)",
    "AGENTLAKE_SNAPSHOT_RETENTION_HOURS": "table maintenance expires snapshots older than this many hours unless a branch or tag references them; pinned ones stay readable through their pin (default 0.25)",
    "AGENTLAKE_SNAPSHOTS_KEEP_LAST": "table maintenance always keeps this many latest snapshots of each table (default 10)",
    "AGENTLAKE_PIN_RETENTION_DAYS": "days a snapshot read by a context artifact stays pinned (readable, its files kept from deletion) after the artifact is made (default 400)",
}


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach an S3-compatible bucket. The secret never appears in repr."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    """One deployment of AgentLake: its home folder, object store and catalog."""

    home: Path
    store: str = "local"
    s3: S3Settings | None = None
    catalog_uri: str | None = None
    ui_port: int = 3000
    demo_rate: float = 1.0
    ingest_interval_s: int = 60
    dedup_window_days: int = 1
    quality_max_quarantine_share: float = 0.5
    quality_future_skew_s: float = 3600.0
    quality_fleet_epoch: str = "2024-01-01T00:00:00+00:00"
    store_retry_s: float = 300.0
    snapshot_retention_hours: float = 0.25
    snapshots_keep_last: int = 10
    pin_retention_days: float = 400.0

    @property
    def store_root(self) -> Path:
        """Folder that acts as the object store on the embedded default."""
        return self.home / "store"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def warehouse_uri(self) -> str:
        """Where Iceberg data and metadata files live: beside the log, on the same store."""
        if self.s3 is not None:
            base = f"s3://{self.s3.bucket}"
            return f"{base}/{self.s3.prefix.strip('/')}/warehouse" if self.s3.prefix else f"{base}/warehouse"
        return (self.store_root / "warehouse").resolve().as_uri()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Resolve the deployment from environment variables (see ``ENV_VARS``).

        Raises:
            ConfigError: an unknown store kind, or S3 without a bucket.
        """
        env = os.environ if environ is None else environ
        home = Path(env.get("AGENTLAKE_HOME") or ".agentlake").expanduser().resolve()
        kind = (env.get("AGENTLAKE_STORE") or "local").strip().lower()
        if kind not in STORE_KINDS:
            raise ConfigError(
                f"AGENTLAKE_STORE={kind!r} is not a known store; set it to one of {', '.join(STORE_KINDS)}"
            )
        s3 = None
        if kind == "s3":
            bucket = env.get("AGENTLAKE_S3_BUCKET", "").strip()
            if not bucket:
                raise ConfigError("AGENTLAKE_STORE=s3 needs AGENTLAKE_S3_BUCKET: set it to the bucket's name")
            s3 = S3Settings(
                bucket=bucket,
                prefix=env.get("AGENTLAKE_S3_PREFIX", "").strip("/"),
                endpoint=env.get("AGENTLAKE_S3_ENDPOINT") or None,
                region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                session_token=env.get("AWS_SESSION_TOKEN") or None,
            )
        return cls(
            home=home,
            store=kind,
            s3=s3,
            catalog_uri=env.get("AGENTLAKE_CATALOG_URI") or None,
            ui_port=_number(env, "AGENTLAKE_UI_PORT", 3000, int),
            demo_rate=_number(env, "AGENTLAKE_DEMO_RATE", 1.0, float),
            ingest_interval_s=_number(env, "AGENTLAKE_INGEST_INTERVAL_S", 60, int),
            dedup_window_days=_number(env, "AGENTLAKE_DEDUP_WINDOW_DAYS", 1, int),
            quality_max_quarantine_share=_number(env, "AGENTLAKE_QUALITY_MAX_QUARANTINE_SHARE", 0.5, float),
            quality_future_skew_s=_number(env, "AGENTLAKE_QUALITY_FUTURE_SKEW_S", 3600.0, float),
            quality_fleet_epoch=_instant(env, "AGENTLAKE_QUALITY_FLEET_EPOCH", "2024-01-01T00:00:00+00:00"),
            store_retry_s=_number(env, "AGENTLAKE_STORE_RETRY_S", 300.0, float),
            snapshot_retention_hours=_number(env, "AGENTLAKE_SNAPSHOT_RETENTION_HOURS", 0.25, float),
            snapshots_keep_last=_at_least_one(env, "AGENTLAKE_SNAPSHOTS_KEEP_LAST", 10),
            pin_retention_days=_number(env, "AGENTLAKE_PIN_RETENTION_DAYS", 400.0, float),
        )


def _instant(env: Mapping[str, str], name: str, default: str) -> str:
    from datetime import datetime

    raw = (env.get(name) or "").strip() or default
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an ISO 8601 time; set it like 2024-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ConfigError(f"{name}={raw!r} has no zone; add one, e.g. {raw}Z")
    return parsed.isoformat()


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to a {kind.__name__} or unset it") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _at_least_one(env: Mapping[str, str], name: str, default: int) -> int:
    value: int = _number(env, name, default, int)
    if value < 1:
        raise ConfigError(f"{name}={value} must be at least 1: the current snapshot of a table is always kept")
    return value
