"""What pins cost: table metadata size and commit time after days of ingest with every snapshot pinned.

    python bench/pins.py            # 1, 7 and 30 days
    python bench/pins.py --quick    # 1 day, a smoke test under a minute

Pins are Iceberg tags, one per snapshot an artifact read (agentlake.pins), kept for the pin
retention (400 days by default). At the default ingest cadence a table gets at most one commit
per ingest tick (60 s): 1,440 snapshots a day. "Artifacts pinning snapshots throughout" is the
worst case: every snapshot is read by some artifact, so none of them can expire.

Committing 43,200 snapshots one by one would take hours (each commit rewrites metadata.json),
so the history is simulated: a real table gets a few real ingest commits (12 segments each, as
one producer sealing every 5 s delivers per tick), then its metadata is extended with one
snapshot a minute for N days, each a copy of the last real one (same manifest list, real
summary with its segment keys), each pinned by a tag whose max_ref_age_ms follows the pin
contract. The table is registered under that metadata and measured for real:
- metadata.json size; loading the table (what every reader and writer pays first);
- one more ingest commit (an append of 1,000 rows, the per-tick cost);
- one more pin (a tag commit, what the first artifact on a new snapshot pays);
- one run's context assembled from raw.events carrying that history: the first with a fresh
  engine (it parses metadata.json), then the median with the engine reused (it keeps a table's
  parsed metadata while the catalog still points at it, as between two ingest commits).
The baseline is the same table under the default expiry (10 snapshots, no pins).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentlake.config import Settings  # noqa: E402
from agentlake.context import ContextEngine, ContextRequest, assemble  # noqa: E402
from agentlake.demo import FleetConfig, emit_runs  # noqa: E402
from agentlake.ingest import IngestOptions, ingest  # noqa: E402
from agentlake.lake import Lake  # noqa: E402
from agentlake.log import LogWriter  # noqa: E402
from agentlake.pins import pin_age_ms, pin_snapshots, pin_tag, retention_ms  # noqa: E402
from agentlake.tables import EVENTS  # noqa: E402

TICK_MS = 60_000
SEGMENTS_PER_COMMIT = 12


def base_table(lake: Lake) -> None:
    """raw.events with a few real commits of 12 segments each."""
    with LogWriter(lake.store, "pins", max_segment_events=40, background_flush=False) as writer:
        emit_runs(writer, FleetConfig(seed=5), runs=120, start=datetime.now(UTC))
    segments = lake.log.list_all()
    for i in range(0, min(len(segments), 4 * SEGMENTS_PER_COMMIT), SEGMENTS_PER_COMMIT):
        ingest(lake, segments[i:i + SEGMENTS_PER_COMMIT], IngestOptions(facts=False))


def simulate(lake: Lake, name: str, snapshots: int, pinned: bool) -> str:
    """Register ``name`` with raw.events' metadata extended to ``snapshots`` snapshots, one per tick."""
    table = lake.table(EVENTS.name)
    meta = orjson.loads(table.io.new_input(table.metadata_location).open().read())
    template = meta["snapshots"][-1]
    start_ms = template["timestamp-ms"]
    seq = meta["last-sequence-number"]
    retention = retention_ms(lake.settings.pin_retention_days)
    out_snapshots, log, refs = [], [], {}
    parent = template["snapshot-id"]
    base_id = 1_000_000_000
    for i in range(snapshots):
        snap = copy.deepcopy(template)
        seq += 1
        snap.update({"snapshot-id": base_id + i, "parent-snapshot-id": parent, "sequence-number": seq,
                     "timestamp-ms": start_ms + (i + 1) * TICK_MS})
        parent = base_id + i
        out_snapshots.append(snap)
        log.append({"snapshot-id": snap["snapshot-id"], "timestamp-ms": snap["timestamp-ms"]})
        if pinned:
            # An artifact made a few seconds after the snapshot became current.
            created = snap["timestamp-ms"] + 5_000
            refs[pin_tag(snap["snapshot-id"])] = {
                "snapshot-id": snap["snapshot-id"], "type": "tag",
                "max-ref-age-ms": pin_age_ms(snap["timestamp-ms"], created, retention),
            }
    refs["main"] = {"snapshot-id": parent, "type": "branch"}
    meta.update({"snapshots": out_snapshots, "snapshot-log": log, "refs": refs, "current-snapshot-id": parent,
                 "last-sequence-number": seq, "last-updated-ms": start_ms + snapshots * TICK_MS})
    location = f"{table.location()}/metadata/{snapshots:06d}-{uuid.uuid4()}.metadata.json"
    with table.io.new_output(location).create(overwrite=True) as handle:
        handle.write(orjson.dumps(meta))
    try:
        lake.catalog.create_namespace("sim")
    except Exception:  # noqa: BLE001 - exists already
        pass
    lake.catalog.register_table(f"sim.{name}", location)
    return location


def measure(lake: Lake, name: str, location: str) -> dict[str, float]:
    size = os.path.getsize(location.removeprefix("file://"))
    started = time.perf_counter()
    table = lake.catalog.load_table(f"sim.{name}")
    load_s = time.perf_counter() - started
    rows = table.scan(limit=1000).to_arrow()
    rows = pa.concat_tables([rows] * (1000 // max(1, rows.num_rows) + 1)).slice(0, 1000)
    started = time.perf_counter()
    table.append(rows)
    append_s = time.perf_counter() - started
    table = lake.catalog.load_table(f"sim.{name}")
    snapshot = table.current_snapshot()
    assert snapshot is not None
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    started = time.perf_counter()
    pin_snapshots(lake, {f"sim.{name}": snapshot.snapshot_id}, created_ms=now_ms,
                  retention=retention_ms(lake.settings.pin_retention_days), tables={f"sim.{name}": table})
    pin_s = time.perf_counter() - started
    table = lake.catalog.load_table(f"sim.{name}")
    cold_s, warm_s = assembly(lake, location)
    return {"metadata_mb": size / 1e6, "load_s": load_s, "append_s": append_s, "pin_s": pin_s,
            "assembly_cold_s": cold_s, "assembly_warm_s": warm_s,
            "snapshots": len(table.metadata.snapshots), "tags": sum(1 for r in table.metadata.refs if r != "main")}


def assembly(lake: Lake, location: str, samples: int = 9) -> tuple[float, float]:
    """One run's context from raw.events carrying this history: a fresh engine, then the median of a reused one."""
    original = lake.table(EVENTS.name).metadata_location
    lake.catalog.drop_table(EVENTS.name)  # the catalog entry only: files stay
    lake.catalog.register_table(EVENTS.name, location)
    run_id = lake.table(EVENTS.name).scan(selected_fields=("run_id",), limit=1).to_arrow().column(0)[0].as_py()
    request = ContextRequest.from_spec({"table": EVENTS.name, "where": [["run_id", "=", run_id]]})
    writer = LogWriter(lake.store, "pinsbench", background_flush=False)
    times = []
    engine = ContextEngine(lake)
    for _ in range(samples + 1):
        started = time.perf_counter()
        assemble(lake, request, run_id=run_id, agent_id="bench", engine=engine, log=writer)
        times.append(time.perf_counter() - started)
    engine.close()
    lake.catalog.drop_table(EVENTS.name)
    lake.catalog.register_table(EVENTS.name, original)
    return times[0], statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    days_list = [1] if args.quick else [1, 7, 30]
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-pins-"))
    results: dict[str, dict[str, float]] = {}
    try:
        lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(work / "home")}))
        base_table(lake)
        summary = lake.table(EVENTS.name).current_snapshot()
        summary_bytes = len(orjson.dumps(summary.summary.model_dump() if summary and summary.summary else {}))
        results["expiry, no pins (10 kept)"] = measure(lake, "baseline", simulate(lake, "baseline", 10, False))
        for days in days_list:
            label = f"{days} day(s), every snapshot pinned"
            results[label] = measure(lake, f"d{days}", simulate(lake, f"d{days}", days * 1440, True))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"pins bench: one commit per table per {TICK_MS // 1000} s tick, {SEGMENTS_PER_COMMIT} segments per commit "
          f"(snapshot summary {summary_bytes} bytes), pins kept 400 days; {'quick' if args.quick else 'full'} mode")
    print(f"{'history':<34}{'snapshots':>10}{'tags':>8}{'metadata MB':>13}{'load s':>9}{'commit s':>10}{'pin s':>8}"
          f"{'context cold s':>16}{'context warm s':>16}")
    for label, r in results.items():
        print(f"{label:<34}{r['snapshots']:>10,}{r['tags']:>8,}{r['metadata_mb']:>13.2f}{r['load_s']:>9.2f}"
              f"{r['append_s']:>10.2f}{r['pin_s']:>8.2f}{r['assembly_cold_s']:>16.3f}{r['assembly_warm_s']:>16.3f}")
    longest = results[f"{days_list[-1]} day(s), every snapshot pinned"]
    base = results["expiry, no pins (10 kept)"]
    ratios = {"commit_vs_unpinned": round(longest["append_s"] / base["append_s"], 1),
              "metadata_vs_unpinned": round(longest["metadata_mb"] / base["metadata_mb"], 1)}
    # An ingest tick is 60 s: a commit must stay a small part of it, and metadata.json small enough
    # for every reader to load it per query.
    goals = {"commit_s_after_history": "<= 5", "metadata_mb_after_history": "<= 50"}
    checks = {"commit_s_after_history": round(longest["append_s"], 2),
              "metadata_mb_after_history": round(longest["metadata_mb"], 2)}
    for key, goal in goals.items():
        print(f"goal {key} {goal}: {checks[key]} {'met' if eval(f'{checks[key]} {goal}') else 'NOT MET'}")
    figures = {label.split(",")[0].replace(" ", "_").replace("(", "").replace(")", ""): {k: round(v, 3) for k, v in r.items()}
               for label, r in results.items()}
    figures["days_simulated"] = days_list[-1]  # type: ignore[assignment]
    print(json.dumps({"bench": "pins", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
