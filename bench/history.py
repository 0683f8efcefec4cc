"""Cost of history: one ingest commit and one scan of raw.events after 10 and after 1,000 commits.

    python bench/history.py            # 1,000 ingest commits (the goals hold for this run)
    python bench/history.py --quick    # 80 commits, a smoke test under a minute
    python bench/history.py --baseline # also 100 commits without maintenance, for contrast (minutes)
    python bench/history.py --quality  # each ingest through the write-audit-publish gate (about 1 s more each)

Each commit is the real ingest path: a small segment (20 demo events) written by
``agentlake.log.writer.LogWriter`` and ingested by ``agentlake.pipeline.ingest.ingest`` into raw.events and
raw.quarantine (parse, dedup window, data files, ledger, commit). Table maintenance
(``agentlake.maintenance.maintain.maintain``: compaction, then expiry) runs every ``--cadence`` commits,
as the maintenance schedule (every 10 minutes) does at one ingest commit a minute. Snapshot
timestamps are wall-clock time here, so the retention is given as a count: keep the last
``--keep`` snapshots (15: what the default 15-minute retention keeps at one commit a minute).
Both points are measured just before a maintenance run, at the same phase of its cycle.

Measured at each point: the median time of the last 9 ingest commits, the median of 5 full
scans of raw.events (``table.scan().to_arrow()``), metadata.json size, live data files,
manifests and snapshots. Goals: the cost at 1,000 commits is at most 1.5 times the cost at 10.
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
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.maintenance.maintain import CompactionPolicy, RetentionPolicy, footprint, maintain  # noqa: E402
from agentlake.pipeline.ingest import ingest  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402
from agentlake.tables.schemas import EVENTS, QUARANTINE  # noqa: E402

EVENTS_PER_SEGMENT = 20
RAW = [EVENTS.name, QUARANTINE.name]


def run_series(
    home: Path, commits: int, points: list[int], cadence: int, keep: int, maintenance: bool, quality: bool = False
) -> dict[int, dict[str, Any]]:
    """Ingest ``commits`` small segments one commit at a time; measure at each of ``points``."""
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    _ = lake.catalog
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    clock = [start]
    writer = LogWriter(lake.store, "history", background_flush=False, clock=lambda: clock[0])
    base = list(generate_runs(FleetConfig(seed=5), 500, start))
    retention = RetentionPolicy(keep_hours=0, keep_last=keep)
    compaction = CompactionPolicy()
    gate = QualityPolicy() if quality else None
    times: list[float] = []
    out: dict[int, dict[str, Any]] = {}
    maintenance_seconds = 0.0
    maintenance_runs = 0
    for n in range(1, commits + 1):
        clock[0] = start + timedelta(minutes=n)  # one commit a minute of arrival time
        for j in range(EVENTS_PER_SEGMENT):
            line = base[((n - 1) * EVENTS_PER_SEGMENT + j) % len(base)]
            writer.append_line(line.replace(b'"event_id":"', b'"event_id":"c%d-' % n))
        segment = writer.flush()
        assert segment is not None
        began = time.perf_counter()
        ingest(lake, [segment], IngestOptions(run_id=f"bench-{n}", quality=gate))
        times.append(time.perf_counter() - began)
        if n in points:
            table = lake.table(EVENTS.name)
            scans = []
            for _ in range(5):
                began = time.perf_counter()
                rows = lake.table(EVENTS.name).scan().to_arrow().num_rows
                scans.append(time.perf_counter() - began)
            fp = footprint(table)
            out[n] = {
                "append_s": statistics.median(times[-9:]), "scan_s": statistics.median(scans), "rows": rows,
                "metadata_json_bytes": fp.metadata_json_bytes, "data_files": fp.data_files,
                "manifests": fp.manifests, "snapshots": fp.snapshots,
                "maintenance_runs": maintenance_runs, "maintenance_s": maintenance_seconds,
            }
        if maintenance and n % cadence == 0:
            began = time.perf_counter()
            maintain(lake, RAW, retention=retention, compaction=compaction)
            maintenance_seconds += time.perf_counter() - began
            maintenance_runs += 1
    writer.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--commits", type=int)
    parser.add_argument("--cadence", type=int, default=10, help="commits between maintenance runs (default 10)")
    parser.add_argument("--keep", type=int, default=15, help="snapshots expiry keeps (default 15)")
    parser.add_argument("--baseline", type=int, nargs="?", const=100, default=0,
                        help="also run this many commits (default 100) without maintenance; slow")
    parser.add_argument("--quality", action="store_true", help="ingest through the write-audit-publish gate")
    args = parser.parse_args()
    commits = args.commits or (80 if args.quick else 1000)
    cadence, keep = args.cadence, args.keep
    points = [10, commits]
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-history-"))
    try:
        series = run_series(work / "maintained", commits, points, cadence, keep, maintenance=True,
                            quality=args.quality)
        baseline = None
        if args.baseline:
            baseline = run_series(work / "baseline", args.baseline, [10, args.baseline], cadence, keep,
                                  maintenance=False, quality=args.quality)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first, last = series[points[0]], series[points[1]]
    ratios = {
        "append_cost_ratio": round(last["append_s"] / first["append_s"], 2),
        "scan_cost_ratio": round(last["scan_s"] / first["scan_s"], 2),
    }
    goals = {"append_cost_ratio": "<= 1.5", "scan_cost_ratio": "<= 1.5"}
    print(f"history bench: {commits:,} ingest commits of {EVENTS_PER_SEGMENT}-event segments into raw.events; "
          f"maintenance every {cadence} commits keeping the last {keep} snapshots; "
          f"{'quick' if args.quick else 'full'} mode{', quality gate on' if args.quality else ''}, {os.cpu_count()} cores")
    header = f"{'series':<22}{'commits':>8}{'append ms':>11}{'scan ms':>9}{'rows':>8}{'metadata.json KB':>18}" \
             f"{'data files':>12}{'manifests':>11}{'snapshots':>11}"
    print(header)
    rows = [("with maintenance", series)] + ([("without maintenance", baseline)] if baseline else [])
    for label, data in rows:
        for n in sorted(data):
            p = data[n]
            print(f"{label:<22}{n:>8}{p['append_s'] * 1000:>11.1f}{p['scan_s'] * 1000:>9.1f}{p['rows']:>8}"
                  f"{p['metadata_json_bytes'] / 1024:>18.1f}{p['data_files']:>12}{p['manifests']:>11}{p['snapshots']:>11}")
    print(f"maintenance: {last['maintenance_runs']} runs, {last['maintenance_s']:.1f} s in all "
          f"({last['maintenance_s'] / max(1, last['maintenance_runs']):.2f} s per run for raw.events and raw.quarantine)")
    for key, goal in goals.items():
        value = ratios[key]
        print(f"goal {key} {goal}: {value} {'met' if eval(f'{value} {goal}') else 'NOT MET'}")
    figures: dict[str, Any] = {"mode": "quick" if args.quick else "full", "commits": commits, "cadence": cadence,
                               "keep": keep, "quality_gate": args.quality}
    for label, data in rows:
        prefix = "" if label == "with maintenance" else "baseline_"
        for n in sorted(data):
            p = data[n]
            figures[f"{prefix}append_ms_at_{n}"] = round(p["append_s"] * 1000, 1)
            figures[f"{prefix}scan_ms_at_{n}"] = round(p["scan_s"] * 1000, 1)
            figures[f"{prefix}metadata_json_bytes_at_{n}"] = p["metadata_json_bytes"]
            figures[f"{prefix}data_files_at_{n}"] = p["data_files"]
            figures[f"{prefix}snapshots_at_{n}"] = p["snapshots"]
    figures["maintenance_s_per_run"] = round(last["maintenance_s"] / max(1, last["maintenance_runs"]), 2)
    print(json.dumps({"bench": "history", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
