"""What pins cost: table metadata, commit, pin, context and as-of times after 30 days of pinned ingest.

    python bench/pins.py            # 30 days of history at one commit a minute
    python bench/pins.py --quick    # 1 day, a smoke test under a minute

Pins are write-once records in the object store (agentlake.pins); expiry removes pinned
snapshots from the table's metadata like any other, and they stay readable through the
immutable metadata file their pin names. So 30 days of history do not live in the table's
metadata any more: they live in the store, as one metadata file per commit (never deleted),
one pin record per pinned snapshot, and one trash record per maintenance run (files waiting
for the pin retention). That is what the history simulates, at the default cadence (one
ingest commit a minute, maintenance every 10 minutes), with artifacts pinning every snapshot:

- "start": a fresh deployment: a few real ingest commits, then real steady-state ticks.
- "N days": the same, but raw.events first carries N days of history in its metadata folder
  (1,440 metadata files a day, each a valid metadata file of 10 snapshots and a 100-entry
  metadata log, whose snapshots read real data files), a pin record for each of those
  snapshots, a trash record every 10 minutes and an as-of pin a day.

Then both run the same real ticks: an ingest commit (an append of 1,000 rows), a context
artifact (assembly pins what it read), and expiry at the default retention (the last 10
snapshots kept). Measured per deployment, for real:
- metadata.json size, loading the table, one ingest commit (median of the last ticks);
- one pin (writing the record), one run's context assembly (a fresh engine; an engine reused
  between commits, as many artifacts share a commit; and right after each tick's commit);
- expiry with its trash pass (lists the trash records);
- an as-of query at the oldest history (start: before the metadata log; N days: N-1 days back),
  which lists the metadata folder and binary-searches it;
- replay of an artifact whose snapshot expired from the table (read through its pin record).
The tag pins this replaces measured 1,441 snapshots / 2.3 MB / 6-8 s per commit after 1 day,
and 43,201 / 70 MB / 159-231 s per commit after 30 days (README).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentlake.config import Settings  # noqa: E402
from agentlake.context.assembly import ContextEngine, ContextRequest, assemble  # noqa: E402
from agentlake.context.pins import Pin, historical_key, pin_expiry, pin_snapshots, retention_ms  # noqa: E402
from agentlake.context.query import query  # noqa: E402
from agentlake.context.replay import REPRODUCIBLE, replay  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.maintenance.maintain import RetentionPolicy, expire, trash_prefix  # noqa: E402
from agentlake.pipeline.ingest import ingest  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, emit_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402
from agentlake.tables.schemas import EVENTS  # noqa: E402

TICK_MS = 60_000
MAINTENANCE_EVERY = 10  # ticks
SEGMENTS_PER_COMMIT = 12
KEEP_LAST = 10
LOG_ENTRIES = 100  # Iceberg's default write.metadata.previous-versions-max


def lake_at(home: Path) -> Lake:
    return Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))


def base_table(lake: Lake) -> None:
    """raw.events with a few real commits of 12 segments each."""
    with LogWriter(lake.store, "pins", max_segment_events=40, background_flush=False) as writer:
        emit_runs(writer, FleetConfig(seed=5), runs=120, start=datetime.now(UTC))
    segments = lake.log.list_all()
    for i in range(0, min(len(segments), 4 * SEGMENTS_PER_COMMIT), SEGMENTS_PER_COMMIT):
        ingest(lake, segments[i:i + SEGMENTS_PER_COMMIT], IngestOptions())


def simulate_history(lake: Lake, template: Lake, days: int) -> dict[str, Any]:
    """Give ``lake``'s raw.events ``days`` of history in its metadata folder and the store, before it goes on for real.

    Returns what was made, and an as-of time in the oldest day.
    """
    started = time.perf_counter()
    ticks = days * 1440
    source = template.table(EVENTS.name)
    meta = orjson.loads(source.io.new_input(source.metadata_location).open().read())
    head = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    table = lake.table(EVENTS.name)
    location = table.location()
    folder = Path(urlparse(location).path) / "metadata"
    for old in folder.glob("*.metadata.json"):
        old.unlink()  # the empty table's first file: the history below comes before it
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - (ticks + 5) * TICK_MS
    names = [f"{location}/metadata/{v:05d}-{uuid.uuid4()}.metadata.json" for v in range(ticks + 1)]
    base_id, seq = 2_000_000_000, int(meta["last-sequence-number"])
    retention = retention_ms(lake.settings.pin_retention_days)
    table_uuid = str(table.metadata.table_uuid)
    snapshots: list[dict[str, Any]] = []
    pins_written = trash_written = 0
    for i in range(ticks + 1):
        ts = start_ms + i * TICK_MS
        seq += 1
        snap = {**head, "snapshot-id": base_id + i, "sequence-number": seq, "timestamp-ms": ts,
                "parent-snapshot-id": base_id + i - 1 if i else head.get("parent-snapshot-id")}
        snapshots = (snapshots + [snap])[-KEEP_LAST:]
        body = {**meta, "location": location, "table-uuid": table_uuid, "last-updated-ms": ts,
                "last-sequence-number": seq, "snapshots": snapshots, "current-snapshot-id": snap["snapshot-id"],
                "refs": {"main": {"snapshot-id": snap["snapshot-id"], "type": "branch"}},
                "snapshot-log": [{"snapshot-id": s["snapshot-id"], "timestamp-ms": s["timestamp-ms"]} for s in snapshots],
                "metadata-log": [{"metadata-file": names[v], "timestamp-ms": start_ms + v * TICK_MS}
                                 for v in range(max(0, i - LOG_ENTRIES), i)]}
        if i == ticks:
            # The last one is the table as it is after the history: its real head and snapshots.
            body.update({"snapshots": meta["snapshots"], "current-snapshot-id": meta["current-snapshot-id"],
                         "refs": meta["refs"], "snapshot-log": meta["snapshot-log"], "last-updated-ms": ts,
                         "last-sequence-number": meta["last-sequence-number"]})
        Path(urlparse(names[i]).path).write_bytes(orjson.dumps(body))
        if i == ticks:
            break
        # An artifact made a few seconds after each snapshot became current pins it.
        created = ts + 5_000
        pin = Pin(EVENTS.name, base_id + i, names[i], created, pin_expiry(created, retention), False, table_uuid)
        lake.store.put_once(pin.key, pin.to_json())
        pins_written += 1
        if i % 1440 == 720:  # an as-of pin a day, on a snapshot an hour older
            old = max(0, i - 60)
            hist = Pin(EVENTS.name, base_id + old, names[old], created, pin_expiry(created, retention), True,
                       table_uuid)
            lake.store.put_once(hist.key, hist.to_json())
            lake.store.put_once(historical_key(hist), hist.to_json())
        if i % MAINTENANCE_EVERY == MAINTENANCE_EVERY - 1:
            # The files of the 10 snapshots that expired since the last run, waiting for the retention.
            files = {f"{location}/metadata/snap-{base_id + j}-1-{uuid.uuid4()}.avro": 4_000
                     for j in range(i - MAINTENANCE_EVERY + 1, i + 1)}
            files.update({f"{location}/data/arrival_day=x/{uuid.uuid4()}.parquet": 60_000 for _ in range(12)})
            key = f"{trash_prefix(EVENTS.name)}{ts:015d}-{uuid.uuid4().hex[:12]}.json"
            lake.store.put_once(key, orjson.dumps({"table": EVENTS.name, "noticed_ms": ts, "files": files}))
            trash_written += 1
    lake.catalog.drop_table(EVENTS.name)  # the catalog entry only
    lake.catalog.register_table(EVENTS.name, names[ticks])
    return {"metadata_files": ticks + 1, "pin_records": pins_written, "trash_records": trash_written,
            "as_of_ms": start_ms + 90 * TICK_MS + 30_000, "expected_snapshot": base_id + 90,
            "seconds": time.perf_counter() - started}


def run_ticks(lake: Lake, ticks: int) -> dict[str, Any]:
    """Real steady-state ticks: an ingest commit, a context artifact, expiry every few ticks; then the measures."""
    table = lake.table(EVENTS.name)
    rows = table.scan(limit=1000).to_arrow()
    rows = pa.concat_tables([rows] * (1000 // max(1, rows.num_rows) + 1)).slice(0, 1000)
    request = ContextRequest.from_sql("SELECT count(*) AS n, max(event_id) AS last FROM raw.events")
    policy = RetentionPolicy(keep_last=KEEP_LAST)
    writer = LogWriter(lake.store, "pinsbench", background_flush=False)
    engine = ContextEngine(lake)
    append_s, assemble_s, expire_s = [], [], []
    first_artifact = None
    for tick in range(ticks):
        table = lake.table(EVENTS.name)
        started = time.perf_counter()
        table.append(rows)
        append_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        made = assemble(lake, request, run_id=f"tick-{tick}", agent_id="bench", engine=engine, log=writer)
        assemble_s.append(time.perf_counter() - started)
        first_artifact = first_artifact or made.artifact.key
        if tick % MAINTENANCE_EVERY == MAINTENANCE_EVERY - 1 or tick == ticks - 1:
            started = time.perf_counter()
            # Everything is older than the 15-minute retention by now: the last 10 are kept.
            expire(lake, EVENTS.name, now=datetime.now(UTC) + timedelta(hours=1), policy=policy)
            expire_s.append(time.perf_counter() - started)
    table = lake.table(EVENTS.name)
    head = table.current_snapshot()
    assert head is not None
    now_ms = int(time.time() * 1000)
    pin_s = []
    for i in range(5):
        started = time.perf_counter()
        pin_snapshots(lake, {EVENTS.name: head.snapshot_id}, created_ms=now_ms + (i + 1) * 3_600_000,
                      retention=retention_ms(lake.settings.pin_retention_days), tables={EVENTS.name: table})
        pin_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    load = lake.table(EVENTS.name)
    load_s = time.perf_counter() - started
    cold_engine = ContextEngine(lake)
    started = time.perf_counter()
    assemble(lake, request, run_id="cold", agent_id="bench", engine=cold_engine, log=writer)
    cold_s = time.perf_counter() - started
    cold_engine.close()
    engine.close()
    writer.close()
    size = Path(urlparse(load.metadata_location).path).stat().st_size
    assert first_artifact is not None
    started = time.perf_counter()
    (replayed,) = replay(lake, first_artifact)
    replay_s = time.perf_counter() - started
    assert replayed.status == REPRODUCIBLE, replayed.text()
    assert load.snapshot_by_id(replayed.pins_replayed[EVENTS.name] or 0) is None  # expired from the table
    tail = max(3, ticks // 3)
    return {"snapshots": len(load.metadata.snapshots), "metadata_kb": size / 1024, "load_s": load_s,
            "commit_s": statistics.median(append_s[-tail:]), "pin_s": statistics.median(pin_s),
            "context_cold_s": cold_s, "context_after_commit_s": statistics.median(assemble_s[-tail:]),
            "expiry_s": statistics.median(expire_s), "replay_expired_s": replay_s}


def warm_contexts(lakes: dict[str, Lake], samples: int = 9) -> dict[str, float]:
    """Median of one run's context with a reused engine (many artifacts share a commit), the
    deployments taking turns so that the machine's other load falls on both alike."""
    request = ContextRequest.from_sql("SELECT count(*) AS n, max(event_id) AS last FROM raw.events")
    engines = {name: ContextEngine(lake) for name, lake in lakes.items()}
    writers = {name: LogWriter(lake.store, "pinswarm", background_flush=False) for name, lake in lakes.items()}
    times: dict[str, list[float]] = {name: [] for name in lakes}
    for i in range(samples + 1):
        for name, lake in lakes.items():
            started = time.perf_counter()
            assemble(lake, request, run_id=f"warm-{i}", agent_id="bench", engine=engines[name], log=writers[name])
            if i:  # the first one parses the metadata
                times[name].append(time.perf_counter() - started)
    for name in lakes:
        engines[name].close()
        writers[name].close()
    return {name: statistics.median(t) for name, t in times.items()}


def as_of(lake: Lake, as_of_ms: int, expected: int | None) -> float:
    """One as-of query at ``as_of_ms``; checks it read the snapshot current then."""
    from agentlake.context.query import resolve

    started = time.perf_counter()
    query(lake, "SELECT count(*) FROM raw.events", as_of_ms=as_of_ms)
    seconds = time.perf_counter() - started
    if expected is not None:
        found = resolve(lake, [EVENTS.name], as_of_ms=as_of_ms)[0][EVENTS.name]
        assert found == expected, (found, expected)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    days = 1 if args.quick else 30
    ticks = 40 if args.quick else 120
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-pins-"))
    results: dict[str, dict[str, Any]] = {}
    made: dict[str, Any] = {}
    try:
        start = lake_at(work / "start")
        base_table(start)
        first_ms = min(s.timestamp_ms for s in start.table(EVENTS.name).metadata.snapshots)
        first_snapshot = start.table(EVENTS.name).metadata.snapshots[0].snapshot_id
        # The history ends with the same table the fresh deployment starts from: same rows and files.
        later = lake_at(work / "later")
        later.table(EVENTS.name)  # created, empty
        made = simulate_history(later, start, days)
        label = f"{days} day(s)"
        results["start"] = run_ticks(start, ticks)
        results["start"]["as_of_s"] = as_of(start, first_ms, first_snapshot)
        results[label] = run_ticks(later, ticks)
        results[label]["as_of_s"] = as_of(later, made["as_of_ms"], made["expected_snapshot"])
        warm = warm_contexts({"start": start, label: later})
        for name, seconds in warm.items():
            results[name]["context_warm_s"] = seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"pins bench: one commit a minute, artifacts pinning every snapshot, pins kept 400 days, expiry keeping "
          f"the last {KEEP_LAST}; {ticks} real ticks per row; {'quick' if args.quick else 'full'} mode")
    print(f"history before the ticks: {made['metadata_files']:,} metadata files, {made['pin_records']:,} pin records, "
          f"{made['trash_records']:,} trash records (simulated in {made['seconds']:.0f}s)")
    print(f"{'history':<10}{'snapshots':>10}{'metadata KB':>13}{'load s':>8}{'commit s':>10}{'pin s':>8}"
          f"{'context cold s':>16}{'context warm s':>16}{'expiry s':>10}{'as-of s':>9}{'replay s':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['snapshots']:>10,}{r['metadata_kb']:>13.1f}{r['load_s']:>8.3f}{r['commit_s']:>10.3f}"
              f"{r['pin_s']:>8.4f}{r['context_cold_s']:>16.3f}{r['context_warm_s']:>16.3f}{r['expiry_s']:>10.3f}"
              f"{r['as_of_s']:>9.3f}{r['replay_expired_s']:>10.3f}")
    base, longest = results["start"], results[f"{days} day(s)"]
    ratios = {key: round(longest[key] / base[key], 2) for key in
              ("commit_s", "metadata_kb", "pin_s", "context_warm_s", "expiry_s", "as_of_s")}
    # A commit and what every reader loads must not grow with history; the rest may grow a little.
    # metadata.json is bounded by the last 10 snapshots and Iceberg's 100-entry metadata log (the
    # start fills its log during the ticks, so its size is below the bound, not at it).
    ratios["metadata_kb_after_history"] = round(longest["metadata_kb"], 1)
    goals = {"commit_s": "<= 1.5", "metadata_kb_after_history": "<= 64", "pin_s": "<= 3",
             "context_warm_s": "<= 1.5"}
    for key, goal in goals.items():
        print(f"goal {key} ({days} day(s) vs start, or after the history) {goal}: {ratios[key]} "
              f"{'met' if eval(f'{ratios[key]} {goal}') else 'NOT MET'}")
    figures: dict[str, Any] = {name.replace(" ", "_").replace("(", "").replace(")", ""):
                               {k: round(v, 4) for k, v in r.items()} for name, r in results.items()}
    figures["days_simulated"] = days
    figures["history"] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in made.items()
                          if k in ("metadata_files", "pin_records", "trash_records", "seconds")}
    print(json.dumps({"bench": "pins", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
