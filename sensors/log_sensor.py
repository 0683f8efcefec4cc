"""The sensor that watches the raw event log for new segments."""

from __future__ import annotations

import orjson
from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from agentlake.log import LogCursor
from assets.raw_log import RAW_EVENT_LOG
from platform_defs.resources import LakeResource


@sensor(
    name="raw_event_log_sensor",
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description="Lists segments that arrived since its cursor (never skipping a late upload) "
    "and records an observation of the raw event log.",
)
def raw_event_log_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult | SkipReason:
    state = orjson.loads(context.cursor) if context.cursor else {}
    cursor = LogCursor.from_json(state.get("log"))
    new, cursor = lake.log_reader().poll(cursor)
    if not new:
        return SkipReason("no new log segments")
    totals = {
        "segments": state.get("segments", 0) + len(new),
        "bytes": state.get("bytes", 0) + sum(seg.size or 0 for seg in new),
        "lines": state.get("lines", 0) + sum(seg.lines for seg in new),
    }
    newest = max(seg.key for seg in new)
    newest = max(newest, state.get("newest") or "")
    observation = AssetObservation(
        asset_key=RAW_EVENT_LOG,
        metadata={
            "segment_count": totals["segments"],
            "bytes": totals["bytes"],
            "lines": totals["lines"],
            "newest_key": newest,
            "new_segments": len(new),
        },
    )
    next_state = {"log": cursor.to_json(), **totals, "newest": newest}
    return SensorResult(asset_events=[observation], cursor=orjson.dumps(next_state).decode())
