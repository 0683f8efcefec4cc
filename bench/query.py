"""`agentlake query` for typical audit queries, in-process and as a CLI call, against plain DuckDB.

    python bench/query.py            # 1,000,000 events (the goals hold for this run)
    python bench/query.py --quick    # 150,000 events, a smoke test under a minute

The lake is the one bench/context.py builds (demo-fleet events through the producer SDK, ingested
with their facts, the day clustered by run). Two audit queries a user asks of it:
- one run's events: ``SELECT * FROM raw.events WHERE run_id = ? ORDER BY ts``;
- one day's decisions: the decisions of an event day from facts.decisions.
Measured for each, on the same snapshots:
- in-process: ``agentlake.context.query.query(lake, sql)`` per query, as a service embedding
  AgentLake calls it (sandbox, snapshot resolution, views, the statement check, the query);
- the peer: the same SQL through plain DuckDB (default settings, the Iceberg reader from the PyPI
  wheels, one connection reused, as DuckDB recommends), each table an ``iceberg_scan`` of the
  snapshot the product read;
- the CLI: one ``agentlake query --json`` call in a new process (interpreter start, imports, the
  query, the output), as a user runs it.
``query.vs_duckdb`` is the in-process p50 over the peer's p50 over both queries (goal <= 1.5);
``query.cli_p50_s`` the CLI call's p50 (goal <= 2.0 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentlake.context.query import query, scan_expression  # noqa: E402
from agentlake.maintenance.clustering import cluster_day  # noqa: E402
from bench.context import build_lake, cli, pct, plain_duckdb  # noqa: E402


def audit_queries(run_ids: list[str], day: date) -> list[tuple[str, str]]:
    """(kind, SQL) pairs: one run's events for each of ``run_ids``, then one day's decisions."""
    out = [("one run's events", f"SELECT * FROM raw.events WHERE run_id = '{run_id}' ORDER BY ts") for run_id in run_ids]
    nxt = day + timedelta(days=1)
    out.append(("one day's decisions",
                "SELECT run_id, agent_id, decision_label, ts FROM facts.decisions "
                f"WHERE ts >= TIMESTAMPTZ '{day}T00:00:00Z' AND ts < TIMESTAMPTZ '{nxt}T00:00:00Z' ORDER BY ts"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--repeat", type=int, help="times each query runs (default 10, quick 4)")
    args = parser.parse_args()
    events = args.events or (150_000 if args.quick else 1_000_000)
    repeat = args.repeat or (4 if args.quick else 10)
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-query-"))
    home = work / "home"
    timings: dict[str, dict[str, list[float]]] = {}
    try:
        lake, day, build_s = build_lake(home, events)
        for name in ("raw.events", "facts.decisions"):
            cluster_day(lake, name, day)
        runs = lake.table("facts.agent_runs").scan(selected_fields=("run_id", "started_at")).to_arrow()
        run_ids = random.Random(3).sample(sorted(runs.column("run_id").to_pylist()), 3)
        event_day = min(runs.column("started_at").to_pylist()).date()
        queries = audit_queries(run_ids, event_day)
        peer = plain_duckdb()
        relations = {}
        for name in ("raw.events", "facts.decisions"):
            table = lake.table(name)
            snapshot = table.current_snapshot()
            assert snapshot is not None
            relations[name] = scan_expression(lake, table, name, snapshot.snapshot_id)

        def peer_sql(sql: str) -> str:
            for name, scan in relations.items():
                sql = sql.replace(f"FROM {name} ", f"FROM {scan} ")
            return sql

        # Warm-up of both (imports, extension loading, the first footer reads), not measured.
        for _kind, sql in queries:
            assert query(lake, sql).num_rows == peer.execute(peer_sql(sql)).to_arrow_table().num_rows
        rows: dict[str, int] = {}
        for _ in range(repeat):
            for kind, sql in queries:  # interleaved, so machine drift falls on both alike
                per = timings.setdefault(kind, {"in_process": [], "duckdb": [], "cli": []})
                t = time.perf_counter()
                rows[kind] = query(lake, sql).num_rows
                per["in_process"].append(time.perf_counter() - t)
                t = time.perf_counter()
                peer.execute(peer_sql(sql)).to_arrow_table()
                per["duckdb"].append(time.perf_counter() - t)
        peer.close()
        for _ in range(max(2, repeat // 2)):
            for kind, sql in (queries[0], queries[-1]):
                timings[kind]["cli"].append(cli(home, "query", sql, "--json"))
        events_rows = lake.table("raw.events").scan().count()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    every = {leg: [v for per in timings.values() for v in per[leg]] for leg in ("in_process", "duckdb", "cli")}
    p50 = {leg: statistics.median(v) for leg, v in every.items()}
    ratios = {"query.vs_duckdb": round(p50["in_process"] / p50["duckdb"], 2)}
    figures = {"mode": "quick" if args.quick else "full", "events": events_rows, "repeat": repeat,
               "query.cli_p50_s": round(p50["cli"], 3), "cli_p95_s": round(pct(every["cli"], 0.95), 3),
               "in_process_p50_ms": round(1000 * p50["in_process"], 1),
               "duckdb_p50_ms": round(1000 * p50["duckdb"], 1), "build_s": round(build_s, 1)}
    goals = {"query.vs_duckdb": "<= 1.5", "query.cli_p50_s": "<= 2.0"}
    print(f"query bench: {events_rows:,} events in raw.events; {'quick' if args.quick else 'full'} mode, "
          f"{os.cpu_count()} cores; lake built in {build_s:.1f}s")
    print(f"{'query':<22}{'rows':>7}{'in-process ms':>15}{'DuckDB ms':>11}{'CLI s':>8}   (p50)")
    for kind, per in timings.items():
        cli_p50 = f"{statistics.median(per['cli']):.2f}" if per["cli"] else "-"
        print(f"{kind:<22}{rows[kind]:>7}{1000 * statistics.median(per['in_process']):>15.1f}"
              f"{1000 * statistics.median(per['duckdb']):>11.1f}{cli_p50:>8}")
    checks = {"query.vs_duckdb": ratios["query.vs_duckdb"], "query.cli_p50_s": figures["query.cli_p50_s"]}
    for key, goal in goals.items():
        print(f"goal {key} {goal}: {checks[key]:.2f} {'met' if eval(f'{checks[key]} {goal}') else 'NOT MET'}")
    print(json.dumps({"bench": "query", "figures": figures, "ratios": ratios, "goals": goals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
