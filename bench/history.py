"""Cost of history at production shape: an ingest commit into a table aged 30 arrival days vs a fresh one.

    python bench/history.py            # 30 days x 200 producers a day (the goals hold for this run)
    python bench/history.py --quick    # 3 days x 40 producers, a smoke test under a minute
    python bench/history.py --quality  # each ingest through the write-audit-publish gate

The aged table is built the real way: for each of 30 simulated arrival days, 200 producers, each
new that day (churn as production has it: every `emit` batch and every context assembly is a
producer of its own), each write one small segment through ``agentlake.log.writer.LogWriter``;
the day's segments are ingested by ``agentlake.pipeline.ingest.ingest`` in ``--commits`` commits
(parse, dedup window, data files, the day's ledger in the table properties, commit), and table
maintenance (``agentlake.maintenance.maintain.maintain``: compaction, then expiry keeping the last
``--keep`` snapshots) runs every ``--cadence`` commits, as its schedule does.

Then the commit is measured on both tables interleaved (fresh, aged, fresh, aged...), so the
machine's drift falls on both alike: each a new producer's segment of today, ingested in one
commit. ``history.commit_aged_vs_fresh`` is the aged median over the fresh median (goal <= 1.5);
``history.metadata_kb_aged`` the aged table's metadata.json, which every commit rewrites (goal
<= 1,024 KB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentlake.config import Settings  # noqa: E402
from agentlake.gate.suites import QualityPolicy  # noqa: E402
from agentlake.log.segments import SegmentInfo  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.maintenance.maintain import CompactionPolicy, RetentionPolicy, footprint, maintain  # noqa: E402
from agentlake.pipeline.ingest import ingest  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402
from agentlake.tables.ledger import LEDGER_PREFIX  # noqa: E402
from agentlake.tables.schemas import EVENTS, QUARANTINE  # noqa: E402

EVENTS_PER_SEGMENT = 10
RAW = [EVENTS.name, QUARANTINE.name]


class Producers:
    """Writes one segment per new producer, each stamped with a simulated arrival time."""

    def __init__(self, seed: int) -> None:
        self.base = list(generate_runs(FleetConfig(seed=seed), 400, datetime.now(UTC)))
        self.made = 0

    def segment(self, lake: Lake, name: str, arrival: datetime) -> SegmentInfo:
        writer = LogWriter(lake.store, name, background_flush=False, clock=lambda: arrival)
        for j in range(EVENTS_PER_SEGMENT):
            line = self.base[(self.made * EVENTS_PER_SEGMENT + j) % len(self.base)]
            writer.append_line(line.replace(b'"event_id":"', f'"event_id":"{name}-'.encode(), 1))
        self.made += 1
        segment = writer.flush()
        writer.close()
        assert segment is not None
        return segment


def age(lake: Lake, producers: Producers, days: int, per_day: int, commits: int, cadence: int, keep: int,
        quality: QualityPolicy | None) -> dict[str, Any]:
    """``days`` arrival days of ``per_day`` one-segment producers, ``commits`` ingest commits a day, maintained."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    retention = RetentionPolicy(keep_hours=0, keep_last=keep)
    compaction = CompactionPolicy()
    done = maintenance_runs = 0
    maintenance_s = 0.0
    for d in range(days):
        day = today - timedelta(days=days - d)
        segments = [producers.segment(lake, f"d{d:02d}p{i:04d}", day + timedelta(seconds=60 * i))
                    for i in range(per_day)]
        step = -(-len(segments) // commits)
        for c in range(0, len(segments), step):
            ingest(lake, segments[c:c + step], IngestOptions(run_id=f"age-{d}-{c}", quality=quality))
            done += 1
            if done % cadence == 0:
                began = time.perf_counter()
                maintain(lake, RAW, retention=retention, compaction=compaction)
                maintenance_s += time.perf_counter() - began
                maintenance_runs += 1
    return {"commits": done, "maintenance_runs": maintenance_runs, "maintenance_s": maintenance_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", type=int, help="arrival days of history (default 30, quick 3)")
    parser.add_argument("--producers", type=int, help="new producers a day (default 200, quick 40)")
    parser.add_argument("--commits", type=int, default=10, help="ingest commits a day (default 10)")
    parser.add_argument("--cadence", type=int, default=10, help="commits between maintenance runs (default 10)")
    parser.add_argument("--keep", type=int, default=15, help="snapshots expiry keeps (default 15)")
    parser.add_argument("--rounds", type=int, help="interleaved fresh/aged commit pairs (default 30, quick 8)")
    parser.add_argument("--quality", action="store_true", help="ingest through the write-audit-publish gate")
    args = parser.parse_args()
    days = args.days or (3 if args.quick else 30)
    per_day = args.producers or (40 if args.quick else 200)
    rounds = args.rounds or (8 if args.quick else 30)
    quality = QualityPolicy() if args.quality else None
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-history-"))
    try:
        aged = Lake(Settings.from_env({"AGENTLAKE_HOME": str(work / "aged")}))
        fresh = Lake(Settings.from_env({"AGENTLAKE_HOME": str(work / "fresh")}))
        producers = Producers(seed=5)
        began = time.perf_counter()
        aging = age(aged, producers, days, per_day, args.commits, args.cadence, args.keep, quality)
        aging_s = time.perf_counter() - began
        # Each table gets one commit before the clock starts: its first (table creation) is not measured.
        now = datetime.now(UTC)
        for lake in (fresh, aged):
            ingest(lake, [producers.segment(lake, f"warm{id(lake) % 997}", now)], IngestOptions(quality=quality))
        times: dict[str, list[float]] = {"fresh": [], "aged": []}
        for r in range(rounds):
            for label, lake in (("fresh", fresh), ("aged", aged)):
                segment = producers.segment(lake, f"t{label[0]}{r:04d}", now + timedelta(seconds=r))
                began = time.perf_counter()
                ingest(lake, [segment], IngestOptions(run_id=f"measure-{label}-{r}", quality=quality))
                times[label].append(time.perf_counter() - began)
        prints = {label: footprint(lake.table(EVENTS.name)) for label, lake in (("fresh", fresh), ("aged", aged))}
        ledger_bytes = {label: sum(len(v) for k, v in lake.table(EVENTS.name).properties.items()
                                   if k.startswith(LEDGER_PREFIX)) for label, lake in (("fresh", fresh), ("aged", aged))}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {label: statistics.median(v) for label, v in times.items()}
    ratios = {"history.commit_aged_vs_fresh": round(med["aged"] / med["fresh"], 2)}
    figures: dict[str, Any] = {
        "mode": "quick" if args.quick else "full", "days": days, "producers_per_day": per_day,
        "commits_per_day": args.commits, "cadence": args.cadence, "keep": args.keep, "rounds": rounds,
        "quality_gate": args.quality, "aging_commits": aging["commits"], "aging_s": round(aging_s, 1),
        "maintenance_runs": aging["maintenance_runs"],
        "maintenance_s_per_run": round(aging["maintenance_s"] / max(1, aging["maintenance_runs"]), 2),
        "commit_fresh_ms": round(1000 * med["fresh"], 1), "commit_aged_ms": round(1000 * med["aged"], 1),
        "history.metadata_kb_aged": round(prints["aged"].metadata_json_bytes / 1024, 1),
        "metadata_kb_fresh": round(prints["fresh"].metadata_json_bytes / 1024, 1),
        "ledger_kb_aged": round(ledger_bytes["aged"] / 1024, 1),
        "snapshots_aged": prints["aged"].snapshots, "data_files_aged": prints["aged"].data_files,
    }
    goals = {"history.commit_aged_vs_fresh": "<= 1.5", "history.metadata_kb_aged": "<= 1024"}
    print(f"history bench: {days} arrival days x {per_day} new producers a day, {args.commits} ingest commits a day, "
          f"maintenance every {args.cadence} commits keeping {args.keep} snapshots; "
          f"{'quick' if args.quick else 'full'} mode{', quality gate on' if args.quality else ''}, {os.cpu_count()} cores")
    print(f"aged in {aging_s:.0f}s ({aging['commits']} commits, {aging['maintenance_runs']} maintenance runs); "
          f"then {rounds} commits on each table, interleaved")
    print(f"{'table':<8}{'commit p50 ms':>15}{'metadata.json KB':>18}{'ledgers KB':>12}{'snapshots':>11}{'data files':>12}")
    for label in ("fresh", "aged"):
        fp = prints[label]
        print(f"{label:<8}{1000 * med[label]:>15.1f}{fp.metadata_json_bytes / 1024:>18.1f}"
              f"{ledger_bytes[label] / 1024:>12.1f}{fp.snapshots:>11}{fp.data_files:>12}")
    checks = {**ratios, "history.metadata_kb_aged": figures["history.metadata_kb_aged"]}
    for key, goal in goals.items():
        print(f"goal {key} {goal}: {checks[key]} {'met' if eval(f'{checks[key]} {goal}') else 'NOT MET'}")
    print(json.dumps({"bench": "history", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
