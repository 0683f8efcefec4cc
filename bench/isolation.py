"""Isolation: ingest freshness with and without a large backfill running beside it.

    python bench/isolation.py            # 10 min without a backfill, 10 min with one of 30 days
    python bench/isolation.py --quick    # 20 s + 20 s, a backfill of 3 days: a smoke test

Starts the platform as `make run` does (platform_defs.launcher at its default settings, the demo
fleet on), after writing and ingesting a history of past arrival days (so that they are
partitions with data to rebuild). Four producer processes then append a sustained 2,000 events/s
through the producer SDK; each samples one event in 100 (its id and its own ``ts``, taken at
``append``). Freshness is the time from that ``ts`` to the event's row being visible on ``main``
of raw.events (polled). Phase one measures it with no backfill; phase two launches, as
``agentlake backfill`` does, a backfill that rebuilds the facts (and the evaluation assets, when
the platform has them) of the past days, and measures it again. The goal is the ratio of the two
p95s (``isolation.p95_ratio <= 1.25``); the backfill's own progress (partitions done, runs
succeeded, runs a minute) is reported so that a lane that starves backfills does not pass for
isolation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from agentlake.config import Settings, setting_default  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.storage.store import ObjectStore  # noqa: E402
from agentlake.tables.schemas import FACT_TABLES  # noqa: E402

PRODUCERS = 4
RATE = 2000  # events a second, all producers together
SAMPLE_EVERY = 100
HISTORY_EVENTS_PER_DAY = 2000
VISIBLE_TIMEOUT_S = 300
INF = float("inf")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank); a sample never seen counts as ``inf``, so it can only raise it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def produce(store_root: str, index: int, rate: float, seconds: float, samples_path: str, phase: str) -> None:
    """One producer process: ``rate`` events a second for ``seconds`` once it is ready, samples to a file."""
    store = ObjectStore.local(Path(store_root))
    pool = [orjson.loads(line) for line in generate_runs(FleetConfig(seed=100 + index), 40, datetime.now(UTC))]
    samples = []
    with LogWriter(store, f"iso{index}") as writer:
        n = 0
        started = time.time()  # the window starts when the process is ready: a slow start is not counted
        until = started + seconds
        while (now := time.time()) < until:
            due = int((now - started) * rate)
            while n < due:
                event = dict(pool[n % len(pool)])
                event["event_id"] = f"iso{phase}{index}-{n}"
                # Each pass over the pool is a new set of runs, as a fleet's runs are: the same run ids
                # again would make every facts batch fail its one-row-per-run audit and be held.
                event["run_id"] = f"{event['run_id']}-{phase}{index}-{n // len(pool)}"
                ts = time.time()
                event["ts"] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                writer.append(event)
                if n % SAMPLE_EVERY == 0:
                    samples.append((event["event_id"], ts))
                n += 1
            time.sleep(0.01)
    Path(samples_path).write_text(json.dumps(samples))


def write_history(settings: Settings, days: list[str]) -> None:
    """Past arrival days with data, ingested in-process with their facts, before the platform starts."""
    from agentlake.pipeline.flow import ingest_pending_then_facts
    from agentlake.tables.lake import Lake

    store = ObjectStore.from_settings(settings)
    for i, day in enumerate(days):
        arrival = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
        writer = LogWriter(store, "history", background_flush=False, clock=lambda a=arrival: a)
        for line in generate_runs(FleetConfig(seed=i), HISTORY_EVENTS_PER_DAY // 25, arrival):
            writer.append_line(line)
        writer.flush()
    ingest_pending_then_facts(Lake(settings))


class VisibilityWatch:
    """When each sampled event of a phase first shows on ``main`` of raw.events, polled once a second.

    It reads only what is new on each poll: the manifests ``main``'s snapshot lists that it has not
    read before, and of those only the data files it has not read before (a compaction's rewritten
    files are read once more, their ids already seen). So a poll costs what the last commits added,
    not a scan of a table that grows by 2,000 events a second, and it runs while the producers do.
    """

    def __init__(self, settings: Settings, phase: str) -> None:
        from agentlake.tables.lake import Lake

        self.lake = Lake(settings)
        # A sample is every SAMPLE_EVERY-th event of a producer: iso<phase><index>-<n>, n % 100 == 0.
        self.pattern = rf"^iso{phase}\d+-(0|\d*00)$"
        self.visible: dict[str, float] = {}
        self._manifests: set[str] = set()
        self._files: set[str] = set()
        self._snapshot: int | None = None

    def poll(self) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = self.lake.table("raw.events")
        snapshot = table.current_snapshot()
        if snapshot is None or snapshot.snapshot_id == self._snapshot:
            return
        self._snapshot = snapshot.snapshot_id
        now = time.time()
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in self._manifests:
                continue
            self._manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                path = entry.data_file.file_path
                if path in self._files:
                    continue
                self._files.add(path)
                with table.io.new_input(path).open() as f:
                    ids = pq.read_table(f, columns=["event_id"]).column("event_id")
                for event_id in ids.filter(pc.match_substring_regex(ids, self.pattern)).to_pylist():
                    self.visible.setdefault(event_id, now)


def measure(settings: Settings, seconds: float, work: Path, phase: str) -> list[float]:
    """Runs the producers for ``seconds``, watching raw.events meanwhile; each sample's freshness in seconds."""
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=produce, args=(str(settings.store_root), i, RATE / PRODUCERS, seconds,
                                              str(work / f"{phase}-{i}.json"), phase)) for i in range(PRODUCERS)]
    for proc in procs:
        proc.start()
    watch = VisibilityWatch(settings, phase)
    while any(proc.is_alive() for proc in procs):
        watch.poll()
        time.sleep(1.0)
    for proc in procs:
        proc.join()
    samples: dict[str, float] = {}
    for i in range(PRODUCERS):
        samples.update(dict(json.loads((work / f"{phase}-{i}.json").read_text())))
    deadline = time.time() + VISIBLE_TIMEOUT_S
    while not samples.keys() <= watch.visible.keys() and time.time() < deadline:
        watch.poll()
        time.sleep(1.0)
    visible = watch.visible
    missing = sum(1 for k in samples if k not in visible)
    if missing:
        print(f"{phase}: {missing} of {len(samples)} sampled events not visible after {VISIBLE_TIMEOUT_S}s "
              "(each counts as a miss: infinitely stale)")
    # A sample that never became visible is the worst freshness there is, not one left out of the figure.
    return [visible[k] - samples[k] if k in visible else INF for k in samples]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def shown(seconds: float) -> float | None:
    """A figure for the JSON line: None for no samples or a quantile that fell on a miss (see ``unseen``)."""
    return None if seconds != seconds or seconds == INF else round(seconds, 2)


def unseen(latencies: list[float]) -> int:
    return sum(1 for x in latencies if x == INF)


def evaluation_assets(url: str) -> list[str]:
    """The assets of the platform's ``evaluation`` job (the context index and the evaluation), if it has one."""
    query = "{ assetNodes { assetKey { path } jobNames } }"
    request = urllib.request.Request(url + "/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        nodes = json.load(resp)["data"]["assetNodes"]
    return sorted("/".join(n["assetKey"]["path"]) for n in nodes if "evaluation" in n["jobNames"])


def progress(settings: Settings, backfill_ids: list[str], minutes: float) -> dict[str, Any]:
    """What the backfills did: their runs, those that succeeded, and the partitions every one of them has done."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    instance = DagsterInstance.from_config(str(settings.dagster_home))
    try:
        runs = {b: instance.get_runs(RunsFilter(tags={"dagster/backfill": b})) for b in backfill_ids}
    finally:
        instance.dispose()
    done = {b: [r for r in rs if r.status == DagsterRunStatus.SUCCESS] for b, rs in runs.items()}
    per_backfill = [{r.tags.get("dagster/partition") for r in rs} for rs in done.values()]
    succeeded = sum(len(rs) for rs in done.values())
    return {"runs": sum(len(rs) for rs in runs.values()), "runs_succeeded": succeeded,
            "partitions_done": len(set.intersection(*per_backfill)) if per_backfill else 0,
            "partitions_done_each": [len(p) for p in per_backfill],
            "runs_per_minute": round(succeeded / minutes, 2) if minutes else 0.0}


def lane_waits(settings: Settings, since: float, until: float) -> dict[str, dict[str, float]]:
    """For the runs created between ``since`` and ``until`` (epoch seconds), by lane: how many, and the
    median time queued (created to started) and running (started to ended): where freshness went."""
    from dagster import DagsterInstance, RunsFilter

    instance = DagsterInstance.from_config(str(settings.dagster_home))
    try:
        records = instance.get_run_records(RunsFilter(created_after=datetime.fromtimestamp(since, UTC),
                                                       created_before=datetime.fromtimestamp(until, UTC)))
    finally:
        instance.dispose()
    by_lane: dict[str, list[Any]] = {}
    for record in records:
        tags = record.dagster_run.tags
        name = "backfill" if "dagster/backfill" in tags else tags.get("agentlake/lane", "other")
        by_lane.setdefault(name, []).append(record)
    out: dict[str, dict[str, float]] = {}
    for name, group in sorted(by_lane.items()):
        started = [r for r in group if r.start_time]
        waits = [r.start_time - r.create_timestamp.timestamp() for r in started]
        ran = [r.end_time - r.start_time for r in started if r.end_time]
        out[name] = {"runs": len(group), "queued_p50_s": round(percentile(waits, 0.5), 2) if waits else None,
                     "queued_max_s": round(max(waits), 2) if waits else None,
                     "ran_p50_s": round(percentile(ran, 0.5), 2) if ran else None}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    phase_s = 20.0 if args.quick else 600.0
    partitions = 3 if args.quick else 30

    from platform_defs.backfill import launch_backfill
    from tests.platform import running_platform

    work = Path(tempfile.mkdtemp(prefix="agentlake-isolation-"))
    home = work / "home"
    settings = Settings.from_env({"AGENTLAKE_HOME": str(home)})
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=partitions - i)).isoformat() for i in range(partitions)]
    for name in [n for n in os.environ if n.startswith("AGENTLAKE_")]:
        del os.environ[name]  # the platform at its default settings
    try:
        started = time.monotonic()
        write_history(settings, days)
        print(f"history: {partitions} past days ingested in {time.monotonic() - started:.0f}s", flush=True)
        with running_platform(home, demo_rate=setting_default("demo_rate"), timeout=300) as url:
            # Warm-up, not measured: the first runs start the run launcher's forkserver.
            measure(settings, 5.0, work, "warmup")
            quiet_from = time.time()
            quiet = measure(settings, phase_s, work, "quiet")
            quiet_lanes = lane_waits(settings, quiet_from, time.time())
            # One backfill per job, as `agentlake backfill` launches each: the facts, then the evaluation.
            selections = [["/".join(t.name.split(".")) for t in FACT_TABLES], evaluation_assets(url)]
            launched_at = time.monotonic()
            launched = [launch_backfill(url, chosen, datetime.fromisoformat(days[0]).date(),
                                        datetime.fromisoformat(days[-1]).date()) for chosen in selections if chosen]
            assets = [a for one in launched for a in one.assets]
            busy_from = time.time()
            busy = measure(settings, phase_s, work, "backfill")
            busy_lanes = lane_waits(settings, busy_from, time.time())
            backfill = progress(settings, [one.backfill_id for one in launched], (time.monotonic() - launched_at) / 60)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    q50, q95, b50, b95 = (percentile(quiet, 0.5), percentile(quiet, 0.95), percentile(busy, 0.5),
                          percentile(busy, 0.95))
    # No ratio when either p95 fell on a miss: a backlog that never drains is not isolation, whatever the ratio.
    ratio = round(b95 / q95, 3) if quiet and busy and INF not in (q95, b95) else float("nan")
    mode = "quick" if args.quick else "full"
    print(f"isolation bench ({mode}): {RATE} events/s from {PRODUCERS} producers plus the demo fleet, default "
          f"settings; {phase_s:.0f}s per phase; backfill of {len(assets)} assets x {partitions} days")
    print(f"{'phase':<28}{'samples':>8}{'unseen':>8}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'no backfill':<28}{len(quiet):>8}{unseen(quiet):>8}{q50:>8.1f}{q95:>8.1f}")
    print(f"{'backfill running':<28}{len(busy):>8}{unseen(busy):>8}{b50:>8.1f}{b95:>8.1f}")
    each = ", ".join(f"{one.job or 'assets'} {one.backfill_id} {n}/{partitions}"
                     for one, n in zip(launched, backfill["partitions_done_each"], strict=True))
    print(f"backfills ({each}): {backfill['partitions_done']}/{partitions} partitions done by all, "
          f"{backfill['runs_succeeded']} of {backfill['runs']} runs succeeded, {backfill['runs_per_minute']} runs/min")
    print(f"{'runs by lane, per phase':<28}{'runs':>8}{'queued p50 s':>14}{'queued max s':>14}{'ran p50 s':>11}")
    for phase, lanes in (("no backfill", quiet_lanes), ("backfill running", busy_lanes)):
        for name, w in lanes.items():
            print(f"{phase + ': ' + name:<28}{w['runs']:>8}{_s(w['queued_p50_s']):>14}{_s(w['queued_max_s']):>14}"
                  f"{_s(w['ran_p50_s']):>11}")
    print(f"isolation.p95_ratio {ratio} (goal <= 1.25: {'met' if ratio <= 1.25 else 'NOT MET'})"
          + (f"; a p95 is a miss (not visible within {VISIBLE_TIMEOUT_S}s): no ratio" if ratio != ratio else ""))
    # A lane that starves the backfill entirely would pass the ratio: its progress is a goal too.
    print(f"backfill progress (goal: partitions done > 0): {'met' if backfill['partitions_done'] else 'NOT MET'}")
    figures = {"mode": mode, "phase_s": phase_s, "partitions": partitions, "assets": assets,
               "quiet_p50_s": shown(q50), "quiet_p95_s": shown(q95), "backfill_p50_s": shown(b50),
               "backfill_p95_s": shown(b95), "samples": [len(quiet), len(busy)],
               "unseen": [unseen(quiet), unseen(busy)], "visible_timeout_s": VISIBLE_TIMEOUT_S, **backfill,
               "lanes": {"quiet": quiet_lanes, "backfill": busy_lanes}}
    figures = {k: (None if isinstance(v, float) and v != v else v) for k, v in figures.items()}  # NaN: no samples
    print(json.dumps({"bench": "isolation", "figures": figures, "ratios": {"isolation.p95_ratio": ratio if ratio == ratio else None},
                      "goals": {"isolation.p95_ratio": "<= 1.25", "partitions_done": "> 0"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
