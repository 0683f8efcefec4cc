"""The run lanes: which runs queue together, how many run at once, and which go first.

One table, read by the instance config (``platform_defs.environment``), by the jobs and sensors
that tag their runs, by the run launcher (a lane's OS niceness) and by ``agentlake backfill``.
Dagster's run queue starts the queued run with the highest ``dagster/priority`` first; a run
without the tag has priority 0, which is the backfill lane's, so a backfill launched from the UI
without tags still yields to every other lane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LANE_TAG = "agentlake/lane"
PRIORITY_TAG = "dagster/priority"
BACKFILL_TAG = "dagster/backfill"  # Dagster puts it on every run of a backfill


@dataclass(frozen=True)
class Lane:
    """A lane: the run tag that puts a run in it, its limit of runs at once, priority and niceness."""

    name: str
    tag: str
    value: str | None  # None: any value of the tag (a backfill's id)
    limit: int
    priority: int
    nice: int = 0  # added to the run process's OS niceness: it yields the CPU to un-niced runs
    runs: str = ""

    def tags(self) -> dict[str, str]:
        """The tags that put a run in this lane, with its priority."""
        return {**({self.tag: self.value} if self.value is not None else {}), PRIORITY_TAG: str(self.priority)}


LANES = (
    # Two ingest runs overlap so that the next one's process starts while the previous commits.
    Lane("ingest", LANE_TAG, "ingest", 2, 40, runs="ingest runs from raw_event_log_sensor"),
    Lane("facts", LANE_TAG, "facts", 1, 30, runs="facts runs from facts_after_ingest_sensor"),
    Lane("freshness", LANE_TAG, "freshness", 1, 30, runs="freshness checks from freshness_checks_sensor"),
    # The dbt marts: their DuckDB file takes one writer, so one run at a time.
    # The background lanes below run niced too: a dbt build or a compaction takes a core for tens
    # of seconds, and on two cores that is time an ingest run waits for.
    Lane("marts", LANE_TAG, "marts", 1, 20, nice=5, runs="dbt builds of the marts from marts_after_facts_sensor"),
    Lane("evaluation", LANE_TAG, "evaluation", 1, 20, nice=5,
         runs="evaluation assets (tag agentlake/lane=evaluation)"),
    Lane("sources", LANE_TAG, "sources", 1, 25, nice=5, runs="loads of the external sources (sources_schedule)"),
    Lane("maintenance", LANE_TAG, "maintenance", 1, 10, nice=5, runs="the maintenance job (schedule or by hand)"),
    Lane("backfill", BACKFILL_TAG, None, 2, 0, nice=10, runs="backfills of any asset (UI or `agentlake backfill`)"),
)
_BY_NAME = {lane.name: lane for lane in LANES}


def lane(name: str) -> Lane:
    """The lane called ``name`` (a KeyError names a lane that is not declared above)."""
    return _BY_NAME[name]


def lane_tags(name: str) -> dict[str, str]:
    """The run tags of lane ``name``: its lane tag and its priority."""
    return lane(name).tags()


def tag_concurrency_limits() -> list[dict[str, object]]:
    """The lanes as the run queue's ``tag_concurrency_limits``."""
    return [{"key": ln.tag, **({"value": ln.value} if ln.value is not None else {}), "limit": ln.limit}
            for ln in LANES]


def max_concurrent_runs() -> int:
    """The run queue's cap on runs at once: the sum of the lanes' limits, so that the cap never binds
    before a lane's own limit does. A lower cap would let one lane's runs hold the slots another needs:
    niced backfill runs, slow while ingest takes the CPU, would keep queued ingest runs waiting, since
    the queue's priority orders what starts next but never preempts what is running."""
    return sum(ln.limit for ln in LANES)


def lane_nice() -> dict[str, int]:
    """The niceness each lane adds to its runs, by its ``agentlake/lane`` value (backfills: see ``run_nice``)."""
    return {ln.value: ln.nice for ln in LANES if ln.tag == LANE_TAG and ln.value is not None and ln.nice}


def run_nice(tags: Mapping[str, str], backfill: int, lanes: Mapping[str, int]) -> int:
    """The niceness to add to a run with these tags: ``backfill`` for a backfill's run (whatever lane its
    asset's jobs name), else its lane's in ``lanes``, else 0."""
    if BACKFILL_TAG in tags:
        return backfill
    return lanes.get(tags.get(LANE_TAG, ""), 0)
