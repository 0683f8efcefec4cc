"""Freshness at the platform's default settings: seconds from an event's `append` to its row on `main`.

    python bench/freshness.py            # 10 minutes of sustained load (the goals hold for this run)
    python bench/freshness.py --quick    # 20 s of load, a smoke test

Starts the platform as `make run` does (platform_defs.launcher: webserver, daemon, the demo fleet,
the facts runs and the maintenance schedule), at its **default settings** (every AGENTLAKE_
variable cleared, so the log sensor ticks at its default interval). After a warm-up (the first
runs also start the run launcher's forkserver), four producer processes append a sustained 2,000
events/s through the producer SDK (``LogWriter.append``, its default flush policy); each samples
one event in 100, with its own ``ts`` taken at ``append``. Freshness is the time from that ``ts``
to the event's row being visible on ``main`` of raw.events (polled once a second): the SDK's
buffering, the sensor's tick, the run's start, ingest and the quality gate, all included. The
producers and the polling are bench/isolation.py's (its quiet phase is this measurement beside a
history of past days). For reference, the ceiling: one 200-event segment ingested in-process
through the same quality gate, no orchestrator.
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
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentlake.config import Settings, setting_default  # noqa: E402
from agentlake.gate.suites import QualityPolicy  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.pipeline.ingest import ingest  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402
from bench.isolation import PRODUCERS, RATE, SAMPLE_EVERY, measure, percentile, shown, unseen  # noqa: E402

EVENTS_PER_SEGMENT = 200


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
    parser.add_argument("--seconds", type=float, help="seconds of sustained load (default 600, quick 20)")
    args = parser.parse_args()
    seconds = args.seconds or (20.0 if args.quick else 600.0)
    lines = list(generate_runs(FleetConfig(seed=5), 200, datetime.now(UTC)))
    ceiling_latencies = ceiling(lines)

    from tests.platform import running_platform

    for name in [n for n in os.environ if n.startswith("AGENTLAKE_")]:
        del os.environ[name]  # the platform at its default settings
    interval = setting_default("ingest_interval_s")
    work = Path(tempfile.mkdtemp(prefix="agentlake-fresh-"))
    home = work / "home"
    settings = Settings.from_env({"AGENTLAKE_HOME": str(home)})
    try:
        with running_platform(home, demo_rate=setting_default("demo_rate"), timeout=300):
            measure(settings, 5.0, work, "warmup")  # not measured: the forkserver's start
            latencies = measure(settings, seconds, work, "load")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    expected = int(seconds * RATE / SAMPLE_EVERY)
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    c50 = statistics.median(ceiling_latencies)
    mode = "quick" if args.quick else "full"
    print(f"freshness bench ({mode}): {RATE} events/s from {PRODUCERS} producer processes for {seconds:.0f}s, "
          f"plus the demo fleet; default settings (log sensor every {interval}s)")
    print(f"{'path':<48}{'samples':>8}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'event append -> visible on main (platform)':<48}{len(latencies):>8}{p50:>8.2f}{p95:>8.2f}")
    print(f"{'ceiling: in-process ingest of a segment':<48}{len(ceiling_latencies):>8}{c50:>8.2f}"
          f"{percentile(ceiling_latencies, 0.95):>8.2f}")
    missing = unseen(latencies)
    if missing:
        print(f"{missing} sampled event(s) of {len(latencies)} (about {expected} expected) never became visible: "
              "each counts as a miss")
    goals = {"freshness.event_p50_s": "<= 10", "freshness.event_p95_s": "<= 20"}
    figures = {"mode": mode, "seconds": seconds, "rate": RATE, "producers": PRODUCERS, "samples": len(latencies),
               "unseen": missing,
               "freshness.event_p50_s": shown(p50), "freshness.event_p95_s": shown(p95),
               "ceiling_p50_s": round(c50, 3), "ingest_interval_s": interval}
    for key, goal in goals.items():
        value = figures[key]
        print(f"goal {key} {goal}: {value if value is not None else 'a miss'} "
              f"{'met' if value is not None and eval(f'{value} {goal}') else 'NOT MET'}")
    figures = {k: (None if isinstance(v, float) and v != v else v) for k, v in figures.items()}  # NaN: no samples
    print(json.dumps({"bench": "freshness", "figures": figures,
                      "ratios": {"p50_vs_ceiling": round(p50 / c50, 1) if shown(p50) is not None else None},
                      "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
