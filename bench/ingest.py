"""Ingest throughput: log segments to a committed Iceberg snapshot, against a ceiling and a peer.

    python bench/ingest.py            # 1,000,000 events (the goals hold for this run)
    python bench/ingest.py --quick    # 100,000 events, a smoke test under a minute

Measured in one run, on the same generated segments (the demo fleet's events, ~660 bytes each):
- agentlake: `ingest()` of every segment into raw.events + raw.quarantine (parse, validate,
  deduplicate, write, commit with the ledger); the facts stage is timed on its own.
- agentlake gated: the same through the write-audit-publish gate (stage on a branch, the Great
  Expectations suite on every new row, guarded fast-forward of main). Great Expectations' import
  happens once per process, before the clock starts; its time is reported on its own.
- ceiling: decompress + parse to Arrow (pyarrow's JSON reader, the same explicit schema) +
  write Parquet (zstd): no Iceberg, no checks.
- peer: dlt loading the same NDJSON into an Iceberg table through its filesystem destination.
Each measurement runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(home: Path, events: int, segment_events: int) -> dict[str, float]:
    """Write ``events`` demo events into the log under ``home``; returns sizes."""
    from agentlake.config import Settings
    from agentlake.log.writer import LogWriter
    from agentlake.sources.demo import FleetConfig, generate_runs
    from agentlake.storage.store import ObjectStore

    settings = Settings.from_env({"AGENTLAKE_HOME": str(home)})
    base = list(generate_runs(FleetConfig(seed=11), 4000, datetime.now(UTC)))
    writer = LogWriter(
        ObjectStore.from_settings(settings), "bench", max_segment_events=segment_events,
        max_segment_bytes=1 << 40, background_flush=False,
    )
    written = raw = 0
    copy = 0
    while written < events:
        # Copies of the base fleet with fresh ids, so nothing deduplicates away.
        prefix = f"c{copy:04d}-".encode()
        for line in base:
            if written == events:
                break
            line = line.replace(b'"event_id":"', b'"event_id":"' + prefix).replace(b'"run_id":"', b'"run_id":"' + prefix)
            writer.append_line(line)
            written += 1
            raw += len(line) + 1
        copy += 1
    writer.close()
    return {"events": written, "mb": raw / 1e6, "segments": writer.stats.segments,
            "stored_mb": writer.stats.bytes_stored / 1e6}


def stage_agentlake(home: Path, facts: bool, gated: bool = False) -> dict[str, float]:
    from agentlake.config import Settings
    from agentlake.gate.suites import QualityPolicy, warm_up
    from agentlake.pipeline.facts import update_facts
    from agentlake.pipeline.ingest import ingest
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    segments = lake.log.list_all()
    _ = lake.catalog  # create the catalog and tables before timing
    import_seconds = 0.0
    if gated:
        started = time.perf_counter()
        warm_up().join()
        import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = ingest(lake, segments, IngestOptions(quality=QualityPolicy() if gated else None))
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "rows": report.rows, "quarantined": report.quarantined,
           "fast_lines": report.fast_lines, "slow_lines": report.slow_lines}
    if gated:
        out["import_seconds"] = import_seconds
        out["audit_seconds"] = sum(g["audit"]["seconds"] for g in report.gate)
        out["held"] = report.segments_held
    if facts:
        started = time.perf_counter()
        facts_report = update_facts(lake, segments[0].dt)
        out["facts_seconds"] = time.perf_counter() - started
        out["facts_rows"] = facts_report.rows
    return out


def stage_ceiling(home: Path) -> dict[str, float]:
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from agentlake.config import Settings
    from agentlake.log.parse import WIRE_SCHEMA
    from agentlake.log.reader import LogReader
    from agentlake.storage.store import ObjectStore

    reader = LogReader(ObjectStore.from_settings(Settings.from_env({"AGENTLAKE_HOME": str(home)})))
    out_dir = Path(tempfile.mkdtemp(dir=home))
    options = pj.ParseOptions(explicit_schema=WIRE_SCHEMA, unexpected_field_behavior="error")
    segments = reader.list_all()
    started = time.perf_counter()
    rows = 0
    for n, seg in enumerate(segments):
        for i, (_, run) in enumerate(reader.iter_chunks(seg.key)):
            table = pj.read_json(io.BytesIO(run), read_options=pj.ReadOptions(block_size=8 << 20), parse_options=options)
            pq.write_table(table, out_dir / f"{n}-{i}.parquet", compression="zstd")
            rows += table.num_rows
    return {"seconds": time.perf_counter() - started, "rows": rows}


def stage_peer(home: Path) -> dict[str, float]:
    import dlt
    import orjson

    from agentlake.config import Settings
    from agentlake.log.reader import LogReader
    from agentlake.storage.store import ObjectStore

    reader = LogReader(ObjectStore.from_settings(Settings.from_env({"AGENTLAKE_HOME": str(home)})))
    segments = reader.list_all()
    os.environ["DLT_DATA_DIR"] = str(home / "dlt-data")
    os.environ["RUNTIME__LOG_LEVEL"] = "ERROR"
    os.environ["DLT_TELEMETRY_DISABLED"] = "1"
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

    @dlt.resource(name="events", table_format="iceberg", write_disposition="append")
    def events():  # type: ignore[no-untyped-def]
        for seg in segments:
            batch = [orjson.loads(line) for line in reader.read_lines(seg.key)]
            yield batch

    pipeline = dlt.pipeline(
        pipeline_name="bench_peer",
        destination=dlt.destinations.filesystem(bucket_url=(home / "dlt-lake").as_uri()),
        dataset_name="raw",
        pipelines_dir=str(home / "dlt-pipelines"),
    )
    started = time.perf_counter()
    pipeline.run(events())
    seconds = time.perf_counter() - started
    return {"seconds": seconds}


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the parent through fork and
    exec, so a stage started by a parent holding a big generated segment would report the
    parent's memory, not its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def run_stage(stage: str, home: Path, *extra: str) -> dict[str, float]:
    """Run one measurement in a fresh process; returns its figures plus its peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "--home", str(home), *extra],
        capture_output=True, text=True, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--stage")
    parser.add_argument("--home")
    parser.add_argument("--facts", action="store_true")
    parser.add_argument("--gated", action="store_true")
    args = parser.parse_args()
    if args.stage:
        home = Path(args.home)
        stages = {
            "agentlake": lambda: stage_agentlake(home, args.facts, args.gated),
            "ceiling": lambda: stage_ceiling(home),
            "peer": lambda: stage_peer(home),
        }
        figures = stages[args.stage]()
        figures["max_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return 0

    events = args.events or (100_000 if args.quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-ingest-"))
    try:
        home = work / "home"
        data = generate(home, events, segment_events=12_000)
        # Each stage gets its own copy of the log and an empty catalog.
        homes = {}
        for stage in ("agentlake", "gated", "ceiling", "peer"):
            homes[stage] = work / stage
            shutil.copytree(home, homes[stage])
        al = run_stage("agentlake", homes["agentlake"], "--facts")
        gated = run_stage("agentlake", homes["gated"], "--gated")
        ceiling = run_stage("ceiling", homes["ceiling"])
        peer = run_stage("peer", homes["peer"])
        # One big segment: memory must stay bounded whatever the segment size.
        big_home = work / "big"
        generate(big_home, events, segment_events=events)
        al_big = run_stage("agentlake", big_home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb, n = data["mb"], data["events"]
    rate = {name: (n / f["seconds"], mb / f["seconds"]) for name, f in
            (("agentlake", al), ("gated", gated), ("ceiling", ceiling), ("peer", peer))}
    ratios = {
        "agentlake_vs_ceiling": round(rate["agentlake"][0] / rate["ceiling"][0], 3),
        "agentlake_vs_peer": round(rate["agentlake"][0] / rate["peer"][0], 2),
        # Share of ingest throughput the quality gate costs: 1 - gated / ungated events per second.
        "gate_cost": round(1 - rate["gated"][0] / rate["agentlake"][0], 3),
    }
    goals = {"agentlake_vs_ceiling": ">= 0.6", "agentlake_vs_peer": ">= 3", "max_rss_mb": "<= 1500",
             "gate_cost": "<= 0.25"}
    print(f"ingest bench: {n:,} events, {mb:,.0f} MB NDJSON in {data['segments']} segments "
          f"({data['stored_mb']:,.0f} MB zstd); {'quick' if args.quick else 'full'} mode, {os.cpu_count()} cores")
    print(f"{'path':<34}{'seconds':>9}{'events/s':>12}{'MB/s':>8}{'peak RSS MB':>13}")
    for label, name, f in (("agentlake (segment -> snapshot)", "agentlake", al),
                           ("agentlake gated (audit+publish)", "gated", gated),
                           ("ceiling (zstd+json+parquet)", "ceiling", ceiling),
                           ("peer (dlt -> iceberg)", "peer", peer)):
        print(f"{label:<34}{f['seconds']:>9.2f}{rate[name][0]:>12,.0f}{rate[name][1]:>8.1f}{f['max_rss_mb']:>13,.0f}")
    print(f"{'agentlake, one big segment':<34}{al_big['seconds']:>9.2f}{n / al_big['seconds']:>12,.0f}"
          f"{mb / al_big['seconds']:>8.1f}{al_big['max_rss_mb']:>13,.0f}")
    print(f"{'facts stage (after ingest)':<34}{al['facts_seconds']:>9.2f}{n / al['facts_seconds']:>12,.0f}")
    print(f"fast path lines {al['fast_lines']:,}, per-line path {al['slow_lines']:,}")
    print(f"quality gate: audit {gated['audit_seconds']:.2f}s of {gated['seconds']:.2f}s, Great Expectations import "
          f"{gated['import_seconds']:.2f}s once per process (not in the rate), {gated['held']} segment(s) held")
    for key, goal in goals.items():
        value = ratios.get(key, max(al["max_rss_mb"], al_big["max_rss_mb"]))
        print(f"goal {key} {goal}: {value} {'met' if eval(f'{value} {goal}') else 'NOT MET'}")
    figures = {
        "mode": "quick" if args.quick else "full", "events": n, "mb": round(mb, 1), "segments": data["segments"],
        "agentlake_events_per_s": round(rate["agentlake"][0]), "agentlake_mb_per_s": round(rate["agentlake"][1], 1),
        "ceiling_events_per_s": round(rate["ceiling"][0]), "peer_events_per_s": round(rate["peer"][0]),
        "facts_seconds": round(al["facts_seconds"], 2),
        "gated_events_per_s": round(rate["gated"][0]), "gate_audit_seconds": round(gated["audit_seconds"], 2),
        "gx_import_seconds": round(gated["import_seconds"], 2),
        "max_rss_mb": round(max(al["max_rss_mb"], al_big["max_rss_mb"])),
        "big_segment_max_rss_mb": round(al_big["max_rss_mb"]),
    }
    print(json.dumps({"bench": "ingest", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
