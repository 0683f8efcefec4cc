"""Freshness: seconds from a segment written to its rows visible on `main` of raw.events, with the daemon.

    python bench/freshness.py            # 120 segments (the goals hold for this run)
    python bench/freshness.py --quick    # 20 segments, a smoke test

Starts the platform as `make run` does (dagster dev: webserver + daemon, the sensor ticking
every 2 s), waits for one warm-up segment to be ingested (the first run also starts the run
launcher's forkserver), then writes one segment a second through the producer SDK and watches
raw.events' ledger for each segment's arrival on `main`. The ceiling is the same segment ingested
in-process with `agentlake.pipeline.ingest.ingest` through the same quality gate (no orchestrator),
measured first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentlake.config import Settings  # noqa: E402
from agentlake.gate.suites import QualityPolicy  # noqa: E402
from agentlake.log.segments import SegmentInfo  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.pipeline.ingest import ingest  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402
from agentlake.tables.ledger import read_ledger  # noqa: E402
from agentlake.tables.schemas import EVENTS  # noqa: E402

SENSOR_INTERVAL_S = 2
EVENTS_PER_SEGMENT = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ceiling(lines: list[bytes], rounds: int = 10) -> list[float]:
    """Latency of ingesting one segment in-process, no orchestrator."""
    home = Path(tempfile.mkdtemp(prefix="agentlake-fresh-ceiling-"))
    try:
        settings = Settings.from_env({"AGENTLAKE_HOME": str(home)})
        lake = Lake(settings)
        _ = lake.catalog
        # As the platform ingests: through the quality gate (write, audit, publish).
        options = IngestOptions(quality=QualityPolicy.from_settings(settings))
        writer = LogWriter(lake.store, "ceiling", background_flush=False)
        latencies = []
        for r in range(rounds):
            for line in lines[r * EVENTS_PER_SEGMENT:(r + 1) * EVENTS_PER_SEGMENT]:
                writer.append_line(line)
            started = time.perf_counter()
            seg = writer.flush()
            assert seg is not None
            ingest(lake, [seg], options)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--segments", type=int)
    args = parser.parse_args()
    count = args.segments or (20 if args.quick else 120)
    lines = list(generate_runs(FleetConfig(seed=5), (count + 1) * 16, datetime.now(UTC)))
    ceiling_latencies = ceiling(lines)

    # The test suite's launcher of `make run`'s stack, on a free port with its own home.
    from tests.platform import running_platform

    work = Path(tempfile.mkdtemp(prefix="agentlake-fresh-"))
    home = work / "home"
    written: dict[str, float] = {}
    visible: dict[str, float] = {}
    os.environ["AGENTLAKE_INGEST_INTERVAL_S"] = str(SENSOR_INTERVAL_S)
    try:
        with running_platform(home, demo_rate=0):
            lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    table = lake.table(EVENTS.name)
                    now = time.monotonic()
                    for key in [k for k in written if k not in visible]:
                        seg = SegmentInfo.from_key(key)
                        if read_ledger(table.properties, seg.dt).holds(seg):
                            visible[key] = now
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            writer = LogWriter(lake.store, "fresh", background_flush=False)
            # Warm-up, not measured: the first run after start-up also starts the run launcher's
            # forkserver (importing the libraries every later run reuses).
            for line in lines[-EVENTS_PER_SEGMENT:]:
                writer.append_line(line)
            warm = writer.flush()
            assert warm is not None
            written[warm.key] = time.monotonic()
            deadline = time.monotonic() + 180
            while warm.key not in visible and time.monotonic() < deadline:
                time.sleep(0.2)
            del written[warm.key]
            for i in range(count):
                for line in lines[i * EVENTS_PER_SEGMENT:(i + 1) * EVENTS_PER_SEGMENT]:
                    writer.append_line(line)
                seg = writer.flush()
                assert seg is not None
                written[seg.key] = time.monotonic()
                time.sleep(1.0)
            deadline = time.monotonic() + 180
            while len(visible) < len(written) and time.monotonic() < deadline:
                time.sleep(0.5)
            stop.set()
            watcher.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    latencies = [visible[k] - written[k] for k in written if k in visible]
    missing = len(written) - len(latencies)
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    c50 = statistics.median(ceiling_latencies)
    print(f"freshness bench: {count} segments of {EVENTS_PER_SEGMENT} events, one a second; sensor every "
          f"{SENSOR_INTERVAL_S}s; {'quick' if args.quick else 'full'} mode")
    print(f"{'path':<40}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'segment -> visible on main (daemon)':<40}{p50:>8.2f}{p95:>8.2f}")
    print(f"{'ceiling: in-process ingest of a segment':<40}{c50:>8.2f}{percentile(ceiling_latencies, 0.95):>8.2f}")
    if missing:
        print(f"{missing} segment(s) never became visible within 180 s")
    ratios = {"p50_over_10s": round(p50 / 10, 3), "p95_over_20s": round(p95 / 20, 3),
              "p50_vs_ceiling": round(p50 / c50, 1)}
    goals = {"p50_over_10s": "<= 1", "p95_over_20s": "<= 1", "missing": "== 0"}
    for key in ("p50_over_10s", "p95_over_20s"):
        print(f"goal {key} {goals[key]}: {ratios[key]} {'met' if ratios[key] <= 1 else 'NOT MET'}")
    figures = {"mode": "quick" if args.quick else "full", "segments": count, "p50_s": round(p50, 2),
               "p95_s": round(p95, 2), "ceiling_p50_s": round(c50, 3), "missing": missing,
               "sensor_interval_s": SENSOR_INTERVAL_S}
    print(json.dumps({"bench": "freshness", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
