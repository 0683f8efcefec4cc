"""The one place where the Dagster side turns the environment into resources and instance config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from dagster import EnvVar

from agentlake.config import Settings
from platform_defs.lanes import lane, lane_nice, max_concurrent_runs, tag_concurrency_limits
from platform_defs.resources import LakeResource


def resolve_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The deployment's settings; raises ConfigError on an unknown store or missing bucket."""
    return Settings.from_env(environ)


def build_lake_resource(settings: Settings) -> LakeResource:
    """The lake resource for these settings. Every secret-bearing setting (the catalog URI, which
    may carry a password, and the AWS keys and token) is an ``EnvVar``: the UI shows its name, and
    the value is resolved only at run time."""
    tuning = {"ingest_interval_s": settings.ingest_interval_s, "dedup_window_days": settings.dedup_window_days}
    catalog_uri = EnvVar("AGENTLAKE_CATALOG_URI") if settings.catalog_uri is not None else None
    if settings.s3 is None:
        return LakeResource(home=str(settings.home), catalog_uri=catalog_uri, **tuning)
    # Imported only here: the embedded default never loads dagster-aws (see LakeResource).
    from dagster_aws.s3 import S3Resource

    from platform_defs.s3 import S3LakeResource

    s3 = settings.s3
    s3_kwargs: dict[str, Any] = {"region_name": s3.region}
    if s3.endpoint:
        s3_kwargs["endpoint_url"] = EnvVar("AGENTLAKE_S3_ENDPOINT")
    if s3.access_key_id:
        s3_kwargs["aws_access_key_id"] = EnvVar("AWS_ACCESS_KEY_ID")
    if s3.secret_access_key:
        s3_kwargs["aws_secret_access_key"] = EnvVar("AWS_SECRET_ACCESS_KEY")
    if s3.session_token:
        s3_kwargs["aws_session_token"] = EnvVar("AWS_SESSION_TOKEN")
    return S3LakeResource(
        home=str(settings.home),
        s3_bucket=s3.bucket,
        s3_prefix=s3.prefix,
        catalog_uri=catalog_uri,
        s3=S3Resource(**s3_kwargs),
        **tuning,
    )


# The libraries every run imports, in the order a run needs them: Dagster's run entry point and
# instance, the table and dataframe stack, the quality gate's Great Expectations, the query engine.
RUN_PRELOAD = (
    "dagster._cli.api",
    # What loading the instance in a run imports: its SQLite storages and their migrations.
    "dagster._cli.utils",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.run_coordinator.queued_run_coordinator",
    "dagster._core.scheduler",
    "alembic.command",
    "upath",
    "pyarrow.parquet",
    "pyarrow.json",
    "pyarrow.dataset",
    "polars",
    "pyiceberg.catalog.sql",
    "pyiceberg.io.pyarrow",
    "pyiceberg.table",
    "great_expectations",
    "duckdb",
    "dagster_dbt",
    # What the source assets import (half of what loading the definitions takes otherwise).
    "dlt",
    "dagster_dlt",
)


def instance_yaml(settings: Settings) -> str:
    """dagster.yaml for this deployment: SQLite storage under the home, run queue lanes and pools,
    and, when S3 is configured, run logs kept beside the data by dagster-aws."""
    config: dict[str, Any] = {
        "storage": {"sqlite": {"base_dir": str(settings.dagster_home / "storage")}},
        # The lanes (platform_defs/lanes.py) in the `concurrency` block, with pools for single-writer
        # resources (one op at a time per pool unless the pool says otherwise). Dagster refuses run
        # limits in both this block and the run coordinator's config: the coordinator keeps only
        # how often it dequeues. The cap on all runs is the lanes' sum: no lane waits for another's runs.
        "concurrency": {
            "runs": {"max_concurrent_runs": max_concurrent_runs(), "tag_concurrency_limits": tag_concurrency_limits()},
            "pools": {"default_limit": 1},
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                # Freshness: a queued ingest run starts within a second, not the default five.
                "dequeue_interval_seconds": 1,
                "dequeue_use_threads": True,
            },
        },
        # A run that ends (or is cancelled) without releasing its pool slots gets them freed after 30 s.
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 30},
        # Runs start warm: forked from a server that imported these once (AgentLake's own code is
        # imported by each run, so reloaded definitions take effect at once).
        "run_launcher": {
            "module": "platform_defs.run_launcher",
            "class": "WarmRunLauncher",
            "config": {"preload": list(RUN_PRELOAD), "backfill_nice": lane("backfill").nice,
                       "lane_nice": lane_nice()},
        },
        "run_retries": {"enabled": True, "max_retries": 3},
        "telemetry": {"enabled": False},
    }
    if settings.s3 is not None:
        s3 = settings.s3
        compute_logs: dict[str, Any] = {
            # The bucket is named by its variable, resolved by Dagster when the instance loads.
            "bucket": {"env": "AGENTLAKE_S3_BUCKET"},
            "prefix": f"{s3.prefix + '/' if s3.prefix else ''}dagster/compute-logs",
            "local_dir": str(settings.dagster_home / "compute-logs"),
            "region": s3.region,
        }
        if s3.endpoint:
            compute_logs["endpoint_url"] = {"env": "AGENTLAKE_S3_ENDPOINT"}
            if s3.endpoint.startswith("http://"):
                compute_logs["use_ssl"] = False
        config["compute_logs"] = {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": compute_logs,
        }
    header = "# Written by AgentLake's launcher from the environment; edits are overwritten.\n"
    return header + yaml.safe_dump(config, sort_keys=False)
