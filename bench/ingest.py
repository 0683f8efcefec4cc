"""Ingest throughput: log segments to a committed Iceberg snapshot, against a ceiling and peers.

    python bench/ingest.py            # 1,000,000 events (the goals hold for this run)
    python bench/ingest.py --quick    # 50,000 events, 3 x 20,000 held: a smoke test (its 100k gate figure is at 50,000)

Measured in one run, on the same generated segments (the demo fleet's events, ~660 bytes each):
- agentlake: `ingest()` of every segment into an empty raw.events + raw.quarantine (parse,
  validate, deduplicate, write, commit with the ledger); the facts stage is timed on its own and
  raw + facts is reported end to end.
- steady state: the same segments into tables that already hold three arrival days (the whole
  dedup window of the segments' day: the day before, earlier that day, the day after) of
  ``--window-events`` events each (1,000,000; `--quick`: 20,000), with that process's peak RSS.
- agentlake gated: the same through the write-audit-publish gate (stage on a branch, the Great
  Expectations suite on every new row, guarded fast-forward of main). Great Expectations' import
  happens once per process, before the clock starts; its time is reported on its own. The gate's
  cost is measured at three batch sizes: 2,000 events (one segment per commit, as the platform
  ingests, median of several commits), 100,000 and the whole run.
- ceiling: decompress + parse to Arrow (pyarrow's JSON reader, the same explicit schema, on
  Arrow's thread pool as the product parses) + write Parquet (zstd) on a writer thread, as the
  product writes: the same threads, no Iceberg, no checks.
- peers: dlt loading the same events into an Iceberg table through its filesystem destination,
  fed Arrow tables (its documented fast path; the segments parsed with the same reader), and
  fed Python dicts (a second, labelled figure).
Each measurement runs in its own process, so its peak RSS (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(
    home: Path, events: int, segment_events: int, *, producer: str = "bench", tag: str = "c",
    arrival: datetime | None = None,
) -> dict[str, float]:
    """Write ``events`` demo events into the log under ``home``; returns sizes.

    ``tag`` keeps the ids of two generated logs apart; ``arrival`` fixes the segments' arrival time.
    """
    from agentlake.config import Settings
    from agentlake.log.writer import LogWriter
    from agentlake.sources.demo import FleetConfig, generate_runs
    from agentlake.storage.store import ObjectStore

    settings = Settings.from_env({"AGENTLAKE_HOME": str(home)})
    # The runs end before the segments' arrival: an event dated after its arrival is one the gate quarantines.
    base = list(generate_runs(FleetConfig(seed=11), 4000, arrival or datetime.now(UTC)))
    writer = LogWriter(
        ObjectStore.from_settings(settings), producer, max_segment_events=segment_events,
        max_segment_bytes=1 << 40, background_flush=False, clock=None if arrival is None else lambda: arrival,
    )
    written = raw = 0
    copy = 0
    while written < events:
        # Copies of the base fleet with fresh ids, so nothing deduplicates away.
        prefix = f"{tag}{copy:04d}-".encode()
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


def _segments(lake: Any, producer: str | None) -> list[Any]:
    segments = lake.log.list_all()
    return [s for s in segments if producer is None or s.producer.startswith(producer)]  # the name, then a nonce


def stage_agentlake(home: Path, facts: bool, gated: bool = False, producer: str | None = None) -> dict[str, float]:
    from agentlake.config import Settings
    from agentlake.gate.suites import QualityPolicy, warm_up
    from agentlake.pipeline.facts import update_facts
    from agentlake.pipeline.ingest import ingest
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    segments = _segments(lake, producer)
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
           "duplicates": report.duplicates, "fast_lines": report.fast_lines, "slow_lines": report.slow_lines}
    if gated:
        out["import_seconds"] = import_seconds
        out["audit_seconds"] = sum(g.audit.seconds for g in report.gate)
        out["held"] = report.segments_held
    if facts:
        started = time.perf_counter()
        facts_report = update_facts(lake, segments[0].dt)
        out["facts_seconds"] = time.perf_counter() - started
        out["facts_rows"] = facts_report.rows
    return out


def stage_commits(home: Path, gated: bool) -> dict[str, float]:
    """One ``ingest()`` per segment, as the platform commits small batches: the median commit's seconds."""
    from agentlake.config import Settings
    from agentlake.gate.suites import QualityPolicy, warm_up
    from agentlake.pipeline.ingest import ingest
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    segments = lake.log.list_all()
    _ = lake.catalog
    if gated:
        warm_up().join()
    options = IngestOptions(quality=QualityPolicy() if gated else None)
    seconds = []
    for seg in segments:
        started = time.perf_counter()
        ingest(lake, [seg], options)
        seconds.append(time.perf_counter() - started)
    # The first commit also creates the branch machinery and warms caches: medians of the rest.
    return {"seconds": statistics.median(seconds[1:] or seconds), "commits": len(seconds),
            "events": sum(s.lines for s in segments) / len(segments)}


class _ParquetWriter:
    """The ceiling's writer thread: Arrow tables gathered to the product's file size, written on one
    background thread with at most two files waiting, as ``agentlake.pipeline.ingest`` writes."""

    def __init__(self, out_dir: Path, target_bytes: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._out, self._target = out_dir, target_bytes
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ceiling-write")
        self._pending: list[Any] = []
        self._gathered: list[Any] = []
        self._bytes = self._files = 0

    def submit(self, table: Any) -> None:
        self._gathered.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self._target:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._gathered:
            return
        while len(self._pending) >= 2:
            self._pending.pop(0).result()
        parts, self._gathered, self._bytes = self._gathered, [], 0
        path = self._out / f"{self._files:05d}.parquet"
        self._files += 1
        self._pending.append(self._pool.submit(lambda: pq.write_table(pa.concat_tables(parts), path, compression="zstd")))

    def finish(self) -> None:
        self._flush()
        for future in self._pending:
            future.result()
        self._pool.shutdown(wait=True)


def _read_json(run: bytes) -> Any:
    """A run of NDJSON lines to Arrow with the product's reader settings (threads, block size, schema)."""
    import pyarrow.json as pj

    from agentlake.log.parse import WIRE_SCHEMA

    block = max(1 << 20, min(8 << 20, len(run) // 2 + 1))  # agentlake.log.parse's threaded block size
    return pj.read_json(io.BytesIO(run), read_options=pj.ReadOptions(use_threads=True, block_size=block),
                        parse_options=pj.ParseOptions(explicit_schema=WIRE_SCHEMA, unexpected_field_behavior="error"))


def stage_ceiling(home: Path) -> dict[str, float]:
    from agentlake.config import Settings
    from agentlake.log.reader import LogReader
    from agentlake.pipeline.ingest import FILE_TARGET_BYTES
    from agentlake.storage.store import ObjectStore

    reader = LogReader(ObjectStore.from_settings(Settings.from_env({"AGENTLAKE_HOME": str(home)})))
    out_dir = Path(tempfile.mkdtemp(dir=home))
    segments = reader.list_all()
    started = time.perf_counter()
    rows = 0
    writer = _ParquetWriter(out_dir, FILE_TARGET_BYTES)
    for seg in segments:
        for _, run in reader.iter_chunks(seg.key):  # the product's chunk size (16 MiB)
            table = _read_json(run)
            writer.submit(table)
            rows += table.num_rows
    writer.finish()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def stage_peer(home: Path, arrow: bool) -> dict[str, float]:
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
            if arrow:
                # dlt's fast path for Parquet-based destinations: Arrow tables, passed through as they are.
                for _, run in reader.iter_chunks(seg.key):
                    yield _read_json(run)
            else:
                yield [orjson.loads(line) for line in reader.read_lines(seg.key)]

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


def window_days(now: datetime) -> list[datetime]:
    """An arrival moment on each day of the dedup window of ``now``'s day, ``now``'s own day before ``now``."""
    from agentlake.config import Settings

    days = Settings.from_env({}).dedup_window_days
    midnight = now.replace(hour=0, minute=0, second=1, microsecond=0)
    return [midnight + timedelta(days=d) for d in range(-days, days + 1)]


def prepare_steady(work: Path, home: Path, window_events: int, now: datetime) -> Path:
    """A copy of ``home``'s log whose tables already hold a full dedup window of other events."""
    steady = work / "steady"
    shutil.copytree(home, steady)
    for n, arrival in enumerate(window_days(now)):
        generate(steady, window_events, segment_events=12_000, producer="window", tag=f"w{n}", arrival=arrival)
    run_stage("agentlake", steady, "--producer", "window")
    return steady


def rate(events: float, f: dict[str, float]) -> float:
    return events / f["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--window-events", type=int, help="events per arrival day already in the tables (steady state)")
    parser.add_argument("--stage")
    parser.add_argument("--home")
    parser.add_argument("--facts", action="store_true")
    parser.add_argument("--gated", action="store_true")
    parser.add_argument("--arrow", action="store_true")
    parser.add_argument("--producer")
    args = parser.parse_args()
    if args.stage:
        home = Path(args.home)
        stages = {
            "agentlake": lambda: stage_agentlake(home, args.facts, args.gated, args.producer),
            "commits": lambda: stage_commits(home, args.gated),
            "ceiling": lambda: stage_ceiling(home),
            "peer": lambda: stage_peer(home, args.arrow),
        }
        figures = stages[args.stage]()
        figures["max_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return 0

    events = args.events or (50_000 if args.quick else 1_000_000)
    window_events = args.window_events or (20_000 if args.quick else 1_000_000)
    small_commits = 6 if args.quick else 12
    now = datetime.now(UTC).replace(hour=12)  # the window's days stay whole whatever the hour
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-ingest-"))
    try:
        home = work / "home"
        data = generate(home, events, segment_events=12_000, arrival=now)
        # Each stage gets its own copy of the log and an empty catalog.
        homes = {}
        for stage in ("agentlake", "gated", "ceiling", "arrow", "dicts"):
            homes[stage] = work / stage
            shutil.copytree(home, homes[stage])
        al = run_stage("agentlake", homes["agentlake"], "--facts")
        gated = run_stage("agentlake", homes["gated"], "--gated")
        if (gated["rows"], gated["quarantined"]) != (al["rows"], al["quarantined"]):
            # Clean events: the gate must keep what the ungated run kept, or the two did not do the same work.
            raise RuntimeError(f"the gated run kept {gated['rows']:,} rows and quarantined {gated['quarantined']:,}; "
                               f"the ungated run {al['rows']:,} and {al['quarantined']:,}")
        ceiling = run_stage("ceiling", homes["ceiling"])
        arrow = run_stage("peer", homes["arrow"], "--arrow")
        dicts = run_stage("peer", homes["dicts"])
        steady_home = prepare_steady(work, home, window_events, now)
        steady = run_stage("agentlake", steady_home, "--producer", "bench")
        # The gate's cost per batch size: one 2,000-event segment per commit, and one 100,000-event batch.
        small = work / "small"
        generate(small, 2_000 * small_commits, segment_events=2_000, arrival=now)
        shutil.copytree(small, work / "small-gated")
        commits = run_stage("commits", small)
        commits_gated = run_stage("commits", work / "small-gated", "--gated")
        mid_events = min(events, 100_000)  # --quick: the whole (smaller) run stands in for 100,000
        if mid_events == events:
            mid, mid_gated = al, gated
        else:
            generate(work / "mid", 100_000, segment_events=12_000, arrival=now)
            shutil.copytree(work / "mid", work / "mid-gated")
            mid = run_stage("agentlake", work / "mid")
            mid_gated = run_stage("agentlake", work / "mid-gated", "--gated")
        # One big segment: memory must stay bounded whatever the segment size.
        big_home = work / "big"
        generate(big_home, events, segment_events=events, arrival=now)
        al_big = run_stage("agentlake", big_home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb, n = data["mb"], data["events"]
    named = (("agentlake", al), ("steady", steady), ("gated", gated), ("ceiling", ceiling), ("arrow", arrow),
             ("dicts", dicts), ("big", al_big))
    eps = {name: rate(n, f) for name, f in named}
    raw_facts_s = al["seconds"] + al["facts_seconds"]
    ratios = {
        "vs_ceiling": round(eps["agentlake"] / eps["ceiling"], 3),
        "vs_dlt_arrow": round(eps["agentlake"] / eps["arrow"], 2),
        "vs_dlt_dicts": round(eps["agentlake"] / eps["dicts"], 2),
        "steady_vs_empty": round(eps["steady"] / eps["agentlake"], 3),
        # Share of ingest throughput the quality gate costs: 1 - gated / ungated events per second.
        "gate_cost_2k": round(1 - commits["seconds"] / commits_gated["seconds"], 3),
        "gate_cost_100k": round(1 - mid["seconds"] / mid_gated["seconds"], 3),
        "gate_cost": round(1 - eps["gated"] / eps["agentlake"], 3),
    }
    figures = {
        "mode": "quick" if args.quick else "full", "events": n, "mb": round(mb, 1), "segments": data["segments"],
        "cores": os.cpu_count(), "window_events_per_day": window_events, "window_days": len(window_days(now)),
        "agentlake_events_per_s": round(eps["agentlake"]), "agentlake_mb_per_s": round(mb / al["seconds"], 1),
        "steady_events_per_s": round(eps["steady"]), "steady_peak_rss_mb": round(steady["max_rss_mb"]),
        "ceiling_events_per_s": round(eps["ceiling"]), "dlt_arrow_events_per_s": round(eps["arrow"]),
        "dlt_dicts_events_per_s": round(eps["dicts"]),
        "facts_seconds": round(al["facts_seconds"], 2), "raw_facts_events_per_s": round(n / raw_facts_s),
        "gated_events_per_s": round(eps["gated"]), "gate_audit_seconds": round(gated["audit_seconds"], 2),
        "gx_import_seconds": round(gated["import_seconds"], 2),
        "commit_2k_s": round(commits["seconds"], 3), "commit_2k_gated_s": round(commits_gated["seconds"], 3),
        "commits_2k": commits["commits"],
        "batch_100k_events": mid_events, "batch_100k_s": round(mid["seconds"], 2), "batch_100k_gated_s": round(mid_gated["seconds"], 2),
        "max_rss_mb": round(max(al["max_rss_mb"], al_big["max_rss_mb"])),
        "big_segment_max_rss_mb": round(al_big["max_rss_mb"]),
    }
    goals = {"vs_ceiling": ">= 0.6", "vs_dlt_arrow": ">= 1.5", "steady_vs_empty": ">= 0.7",
             "steady_peak_rss_mb": "<= 1500", "gate_cost_2k": "<= 0.25", "gate_cost_100k": "<= 0.10",
             "max_rss_mb": "<= 1500"}

    print(f"ingest bench: {n:,} events, {mb:,.0f} MB NDJSON in {data['segments']} segments "
          f"({data['stored_mb']:,.0f} MB zstd); {'quick' if args.quick else 'full'} mode, {os.cpu_count()} cores")
    print(f"{'path':<44}{'seconds':>9}{'events/s':>12}{'MB/s':>8}{'peak RSS MB':>13}")
    for label, name, f in (("agentlake, empty tables", "agentlake", al),
                           (f"agentlake, steady ({len(window_days(now))} days x {window_events:,} held)", "steady", steady),
                           ("agentlake gated (audit+publish)", "gated", gated),
                           ("ceiling (2 parse threads + writer thread)", "ceiling", ceiling),
                           ("dlt fed Arrow -> iceberg", "arrow", arrow),
                           ("dlt fed dicts -> iceberg", "dicts", dicts),
                           ("agentlake, one big segment", "big", al_big)):
        print(f"{label:<44}{f['seconds']:>9.2f}{eps[name]:>12,.0f}{mb / f['seconds']:>8.1f}{f['max_rss_mb']:>13,.0f}")
    print(f"{'raw + facts end to end':<44}{raw_facts_s:>9.2f}{n / raw_facts_s:>12,.0f}")
    print(f"{'facts stage alone (after ingest)':<44}{al['facts_seconds']:>9.2f}{n / al['facts_seconds']:>12,.0f}")
    print(f"gate cost by batch: 2,000 events {commits['seconds'] * 1000:.0f} ms -> {commits_gated['seconds'] * 1000:.0f} ms "
          f"a commit (median of {commits['commits'] - 1}); {mid_events:,} events {mid['seconds']:.2f} s -> "
          f"{mid_gated['seconds']:.2f} s; {n:,} events {al['seconds']:.2f} s -> {gated['seconds']:.2f} s")
    print(f"fast path lines {al['fast_lines']:,}, per-line path {al['slow_lines']:,}; steady run: "
          f"{steady['rows']:,} rows added, {steady['duplicates']:,} duplicates")
    print(f"quality gate: audit {gated['audit_seconds']:.2f}s of {gated['seconds']:.2f}s, Great Expectations import "
          f"{gated['import_seconds']:.2f}s once per process (not in the rate), {gated['held']} segment(s) held")
    values = {**ratios, **figures}
    met = {}
    for key, goal in goals.items():
        met[key] = bool(eval(f"{values[key]} {goal}"))
        print(f"goal {key} {goal}: {values[key]} {'met' if met[key] else 'NOT MET'}")
    figures["met"] = met
    print(json.dumps({"bench": "ingest", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
