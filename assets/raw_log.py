"""The raw event log as an external asset: AgentLake does not build it, agents write it."""

from __future__ import annotations

from dagster import AssetKey, AssetSpec

RAW_EVENT_LOG = AssetKey("raw_event_log")

raw_event_log = AssetSpec(
    key=RAW_EVENT_LOG,
    group_name="log",
    kinds={"s3"},
    description=(
        "The immutable raw event log: every agent event, as written by the producer SDK, the CLI "
        "(`agentlake emit`, `agentlake import-otlp`) or the demo fleet. Events land in write-once "
        "segments (NDJSON + zstd) under `log/v1/dt=YYYY-MM-DD/hr=HH/`; a segment's key carries its "
        "arrival time, producer, first sequence number, line count and checksum. Nothing here is ever "
        "overwritten. The `raw_event_log_sensor` observes new segments: see the Events tab for the "
        "segment count, bytes and newest key."
    ),
)
