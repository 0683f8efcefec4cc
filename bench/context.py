"""Context assembly and replay on a large lake, against plain DuckDB reading the same snapshots.

    python bench/context.py            # 1,000,000 events (the goals hold for this run)
    python bench/context.py --quick    # 150,000 events, a smoke test under a minute

The lake is built the real way: demo-fleet events (run ids random, as in production) written
through the producer SDK, ingested into raw.events and the fact tables, then each day clustered
by run (agentlake.layout.cluster_day). A selective context is one run's history (raw.events)
plus its retrieved documents (facts.retrievals), as a structured spec. Measured, per run:
- assembly: `assemble()` end to end: resolve and pin snapshots, query through DuckDB's Iceberg
  reader with the filters pushed down, write the artifact (Parquet + manifest), emit the
  `context_assembled` event (into the agent's own log writer);
- the peer: the same two queries on the same snapshots through plain DuckDB (`iceberg_scan` of
  each pinned snapshot, default settings, optimizer on, one connection reused as the product
  reuses its engine), run right after each assembly (interleaved, so drift falls on both alike):
  what answering the question costs without AgentLake;
- replay warm: `replay()` of each artifact on one reused engine, after one warm-up (load, verify hashes,
  re-execute at the pins, compare, hold against the run's `context_assembled` event);
- replay cold: `agentlake replay <artifact>` in a new process each time, as a user runs it;
- for reference, assembly on the files as ingest wrote them (before clustering).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentlake.config import Settings  # noqa: E402
from agentlake.context.assembly import ContextEngine, ContextRequest, assemble  # noqa: E402
from agentlake.context.query import scan_expression  # noqa: E402
from agentlake.context.replay import REPRODUCIBLE, replay  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.maintenance.clustering import cluster_day  # noqa: E402
from agentlake.pipeline.flow import ingest_then_facts  # noqa: E402
from agentlake.pipeline.stage import IngestOptions  # noqa: E402
from agentlake.sources.demo import FleetConfig, generate_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402

_IDS = re.compile(rb'"(run_id|event_id)":"([^"]*)"')


def generate(lake: Lake, events: int) -> int:
    """Copies of a demo fleet with fresh ids (a suffix, so run ids stay random), through the SDK."""
    base = list(generate_runs(FleetConfig(seed=11), 4000, datetime.now(UTC)))
    writer = LogWriter(lake.store, "bench", max_segment_events=12_000, max_segment_bytes=1 << 40,
                       background_flush=False)
    written = copy = 0
    while written < events:
        suffix = f"-c{copy:04d}".encode()
        for line in base:
            if written == events:
                break
            writer.append_line(_IDS.sub(lambda m, s=suffix: b'"' + m.group(1) + b'":"' + m.group(2) + s + b'"', line))
            written += 1
        copy += 1
    writer.close()
    return written


def spec(run_id: str) -> ContextRequest:
    return ContextRequest.from_spec({"sources": [
        {"name": "history", "table": "raw.events", "where": [["run_id", "=", run_id]], "order_by": ["ts"]},
        {"name": "documents", "table": "facts.retrievals", "where": [["run_id", "=", run_id]],
         "order_by": ["document_rank"]},
    ]})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def build_lake(home: Path, events: int) -> tuple[Lake, str, float]:
    """A lake of ``events`` demo events through the SDK, ingested with its facts; its day and build seconds."""
    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    started = time.perf_counter()
    generate(lake, events)
    segments = lake.log.list_all()
    ingest_then_facts(lake, segments, IngestOptions())
    return lake, segments[0].dt, time.perf_counter() - started


def plain_duckdb() -> Any:
    """The peer: a DuckDB connection at its default settings with the Iceberg reader from the PyPI wheels."""
    import duckdb
    import duckdb_extensions

    con = duckdb.connect()
    for extension in ("avro", "iceberg"):
        duckdb_extensions.import_extension(extension, con=con)
        con.execute(f"LOAD {extension}")
    return con


def cli(home: Path, *args: str) -> float:
    """Seconds one ``agentlake`` command takes in a new process (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLAKE_")}
    env["AGENTLAKE_HOME"] = str(home)
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "agentlake"), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--runs", type=int, help="contexts to assemble (default 40, quick 15)")
    parser.add_argument("--cold", type=int, help="cold replays, each a new process (default 10, quick 3)")
    args = parser.parse_args()
    events = args.events or (150_000 if args.quick else 1_000_000)
    samples = args.runs or (15 if args.quick else 40)
    colds = args.cold or (3 if args.quick else 10)
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-context-"))
    home = work / "home"
    try:
        lake, day, build_s = build_lake(home, events)
        rng = random.Random(7)
        runs = lake.table("facts.agent_runs").scan(selected_fields=("run_id",)).to_arrow().column(0).to_pylist()
        chosen = rng.sample(sorted(runs), samples)
        engine = ContextEngine(lake)
        agent_log = LogWriter(lake.store, "benchagent", background_flush=False)

        peer_con = plain_duckdb()
        peer: list[float] = []

        def assemble_all(with_peer: bool) -> tuple[list[float], list]:
            """Each run's assembly, then (``with_peer``) the peer on its pins: interleaved, so drift falls on both."""
            times, results = [], []
            for run_id in chosen:
                t = time.perf_counter()
                result = assemble(lake, spec(run_id), run_id=run_id, agent_id="bench", engine=engine, log=agent_log)
                times.append(time.perf_counter() - t)
                results.append(result)
                if with_peer:
                    # The same queries on the same snapshots, plain DuckDB, its connection warm as the engine is.
                    relations = {name: scan_expression(lake, lake.table(name), name, int(sid))
                                 for name, sid in result.manifest["pins"].items() if sid is not None}
                    sqls = list(spec(run_id).queries(relations).values())
                    t = time.perf_counter()
                    rows = sum(peer_con.execute(sql).to_arrow_table().num_rows for sql in sqls)
                    peer.append(time.perf_counter() - t)
                    assert rows == result.manifest["record_count"], (rows, result.manifest["record_count"])
            return times, results

        assemble(lake, spec(chosen[0]), run_id="warm-up", agent_id="bench", engine=engine, log=agent_log)
        unclustered, _ = assemble_all(with_peer=False)
        started = time.perf_counter()
        clustered = [cluster_day(lake, name, day) for name in ("raw.events", "facts.retrievals")]
        cluster_s = time.perf_counter() - started
        warm = assemble(lake, spec(chosen[0]), run_id="warm-up", agent_id="bench", engine=engine, log=agent_log)
        for sql in spec(chosen[0]).queries({name: scan_expression(lake, lake.table(name), name, int(sid))
                                            for name, sid in warm.manifest["pins"].items() if sid is not None}).values():
            peer_con.execute(sql).to_arrow_table()  # the peer's warm-up, as the engine had one
        assembly, results = assemble_all(with_peer=True)
        peer_con.close()
        # The context_assembled events reach raw.events, as on the platform, so replay holds each artifact
        # against its run's event (the check a real replay makes).
        agent_log.close()
        ingest_then_facts(lake, [s for s in lake.log.list_all() if s.producer == "benchagent"], IngestOptions())
        engine.close()
        engine = ContextEngine(lake)
        replay(lake, results[0].artifact.key, engine=engine)  # warm-up
        replays = []
        statuses = set()
        for result in results:
            t = time.perf_counter()
            (report,) = replay(lake, result.artifact.key, engine=engine)
            replays.append(time.perf_counter() - t)
            statuses.add(report.status)
        engine.close()
        cold = [cli(home, "replay", result.artifact.key) for result in results[:colds]]
        records = [r.manifest["record_count"] for r in results]
        events_rows = lake.table("raw.events").scan().count()
        retrieval_rows = lake.table("facts.retrievals").scan().count()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms = {name: (1000 * statistics.median(v), 1000 * pct(v, 0.95)) for name, v in
          (("assembly", assembly), ("replay", replays), ("replay_cold", cold), ("duckdb", peer),
           ("assembly_ingest_layout", unclustered))}
    ratios = {"context.assembly_vs_duckdb": round(ms["assembly"][0] / ms["duckdb"][0], 2)}
    goals = {"context.assembly_vs_duckdb": "<= 1.3", "context.replay_cold_s": "<= 1.0", "assembly_p50_ms": "<= 250",
             "replay_p50_ms": "<= 500"}
    checks = {"context.replay_cold_s": ms["replay_cold"][0] / 1000, "assembly_p50_ms": ms["assembly"][0],
              "replay_p50_ms": ms["replay"][0], **ratios}
    print(f"context bench: {events_rows:,} events in raw.events, {retrieval_rows:,} rows in facts.retrievals; "
          f"{'quick' if args.quick else 'full'} mode, {os.cpu_count()} cores")
    print(f"lake built (log + ingest + facts) in {build_s:.1f}s; clustered by run in {cluster_s:.1f}s "
          f"({', '.join(f'{c.table}: {c.files_read} -> {c.files_written} files' for c in clustered)})")
    print(f"{len(results)} contexts, one run each: {statistics.mean(records):.1f} records on average; "
          f"replays: {', '.join(sorted(statuses))}")
    print(f"{'measurement':<46}{'p50 ms':>10}{'p95 ms':>10}{'samples':>9}")
    for label, name, n in (("assembly (clustered by run)", "assembly", len(assembly)),
                           ("peer: plain DuckDB, same queries and snapshots", "duckdb", len(peer)),
                           ("replay, warm engine", "replay", len(replays)),
                           ("replay cold: `agentlake replay`, new process", "replay_cold", len(cold)),
                           ("assembly on ingest layout (reference)", "assembly_ingest_layout", len(unclustered))):
        print(f"{label:<46}{ms[name][0]:>10.1f}{ms[name][1]:>10.1f}{n:>9}")
    for key, goal in goals.items():
        value = checks[key]
        print(f"goal {key} {goal}: {value:.2f} {'met' if eval(f'{value} {goal}') else 'NOT MET'}")
    figures = {
        "mode": "quick" if args.quick else "full", "events": events_rows, "retrieval_rows": retrieval_rows,
        "contexts": len(results), "records_per_context": round(statistics.mean(records), 1),
        "assembly_p50_ms": round(ms["assembly"][0], 1), "assembly_p95_ms": round(ms["assembly"][1], 1),
        "duckdb_p50_ms": round(ms["duckdb"][0], 1), "duckdb_p95_ms": round(ms["duckdb"][1], 1),
        "replay_p50_ms": round(ms["replay"][0], 1), "replay_p95_ms": round(ms["replay"][1], 1),
        "context.replay_cold_s": round(ms["replay_cold"][0] / 1000, 3),
        "replay_cold_p95_s": round(ms["replay_cold"][1] / 1000, 3),
        "assembly_ingest_layout_p50_ms": round(ms["assembly_ingest_layout"][0], 1),
        "assembly_ingest_layout_p95_ms": round(ms["assembly_ingest_layout"][1], 1),
        "cluster_seconds": round(cluster_s, 1), "replays_reproducible": statuses == {REPRODUCIBLE},
    }
    print(json.dumps({"bench": "context", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0 if statuses == {REPRODUCIBLE} else 1


if __name__ == "__main__":
    sys.exit(main())
