"""Evaluation throughput: decisions evaluated per second for a day of runs, every artifact replayed.

    python bench/eval.py            # a day of 10,000 runs (about 7,500 context artifacts)
    python bench/eval.py --quick    # 200 runs, a smoke test (about 30 s on 2 shared cores)

The day is made as production makes it: the demo fleet's agents read their context through
AgentLake (one artifact per support-triage and research run), half the day is ingested before the
second half runs, so later contexts read earlier decisions and feedback. Measured on that day:

- setup: what a run's context assembly costs the fleet (the same runs with and without the
  lake-reading agents; the difference per artifact), which bounds the rate `make run`'s fleet keeps;
- `evaluate_day`: the whole evaluation (pinned reads of the facts, every artifact replayed and held
  against the log, both eval tables written in one commit each), in decisions per second;
- the ceiling: the same essential replay work with nothing else (each artifact loaded and checked,
  its request re-executed at its pins on one engine, its records hashed), plus the same scoring;
- the peer: scoring without replay (the facts read and scored, no artifact opened): what replay costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentlake.config import Settings  # noqa: E402
from agentlake.context.assembly import (  # noqa: E402
    ContextEngine,
    ContextRequest,
    combined_hash,
    load_artifact,
    records_hash,  # noqa: E402
)
from agentlake.context.query import query  # noqa: E402
from agentlake.eval.evaluate import evaluate_day  # noqa: E402
from agentlake.log.writer import LogWriter  # noqa: E402
from agentlake.pipeline.flow import ingest_pending_then_facts  # noqa: E402
from agentlake.sources.agents import LakeAgents  # noqa: E402
from agentlake.sources.demo import FleetConfig, emit_runs  # noqa: E402
from agentlake.tables.lake import Lake  # noqa: E402


class _Discard:
    """A line sink that keeps nothing: the fleet's own cost, without the log."""

    def append_line(self, line: bytes) -> int:
        return len(line)


def _day(lake: Lake, runs: int) -> dict[str, float]:
    """Half the runs, ingest, the other half reading that context, ingest; returns setup figures."""
    assembled = 0
    seconds = 0.0
    for seed, n in ((101, runs // 2), (102, runs - runs // 2)):
        with LogWriter(lake.store, "bench") as writer:
            agents = LakeAgents(lake, log=writer)
            started = time.perf_counter()
            emit_runs(writer, FleetConfig(seed=seed), n, datetime.now(UTC), decider=agents)
            seconds += time.perf_counter() - started
            assembled += agents.assembled
            agents.close()
        ingest_pending_then_facts(lake)
    started = time.perf_counter()
    for seed, n in ((101, runs // 2), (102, runs - runs // 2)):
        emit_runs(_Discard(), FleetConfig(seed=seed), n, datetime.now(UTC))
    plain = time.perf_counter() - started
    return {"runs": runs, "artifacts": assembled, "fleet_with_context_s": round(seconds, 2),
            "fleet_without_context_s": round(plain, 2),
            "assembly_ms_per_artifact": round((seconds - plain) / max(1, assembled) * 1000, 1)}


def _ceiling(lake: Lake, keys: list[str]) -> tuple[float, int]:
    """Each artifact loaded and checked, its request re-executed at its pins, its records hashed."""
    engine = ContextEngine(lake)
    same = 0
    started = time.perf_counter()
    for key in keys:
        artifact = load_artifact(lake.store, key)
        request = ContextRequest.from_spec(artifact.manifest["request"])
        records, _ = engine.run(request, artifact.pins, engine.tables(list(artifact.pins)), plan=False)
        same += combined_hash({n: records_hash(t) for n, t in records.items()}) == artifact.manifest["records_hash"]
    seconds = time.perf_counter() - started
    engine.close()
    return seconds, same


def _score_only(lake: Lake) -> tuple[float, int]:
    """The facts of the day read and scored per decision, no artifact opened (what the peer does)."""
    started = time.perf_counter()
    table: pa.Table = query(lake, """
        SELECT d.run_id, d.agent_id, d.agent_version, any_value(f.feedback_label) AS label,
               sum(l.input_tokens) AS input_tokens, sum(l.output_tokens) AS output_tokens,
               any_value(r.latency_ms) AS latency_ms
        FROM facts.decisions d
        LEFT JOIN facts.feedback f ON f.run_id = d.run_id
        LEFT JOIN facts.llm_calls l ON l.run_id = d.run_id
        LEFT JOIN facts.agent_runs r ON r.run_id = d.run_id
        GROUP BY ALL""")
    return time.perf_counter() - started, table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 runs: a smoke test")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (200 if args.quick else 10_000)
    home = Path(tempfile.mkdtemp(prefix="agentlake-bench-eval-"))
    try:
        lake = Lake(Settings(home=home))
        setup = _day(lake, runs)
        day = datetime.now(UTC).date().isoformat()
        started = time.perf_counter()
        report = evaluate_day(lake, day, run_id="bench")
        eval_s = time.perf_counter() - started
        keys = [k for k in (orjson.loads(a or "{}").get("context_artifact") for a in
                            query(lake, "SELECT attributes FROM facts.decisions").column("attributes").to_pylist()) if k]
        ceiling_s, same = _ceiling(lake, keys)
        peer_s, scored = _score_only(lake)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    figures = {
        **setup, "decisions": report.decisions, "artifacts_replayed": report.artifacts_replayed,
        "reproducible_rate": report.reproducible_rate, "eval_s": round(eval_s, 2),
        "eval_decisions_per_s": round(report.decisions / eval_s, 1),
        "ceiling_decisions_per_s": round(report.decisions / (ceiling_s + peer_s), 1),
        "peer_score_only_decisions_per_s": round(scored / peer_s, 1),
        "ceiling_reproducible": same,
    }
    ratios = {
        "eval_vs_ceiling": round(figures["eval_decisions_per_s"] / figures["ceiling_decisions_per_s"], 3),
        "eval_vs_score_only": round(figures["eval_decisions_per_s"] / figures["peer_score_only_decisions_per_s"], 4),
    }
    goals = {
        "every artifact reproducible": report.reproducible_rate == 1.0 and same == len(keys),
        "eval at least half the ceiling's rate": ratios["eval_vs_ceiling"] >= 0.5,
        "a day of at least 10,000 runs": runs >= 10_000,
    }
    print(f"eval bench: {runs:,} runs, {setup['artifacts']:,} context artifacts "
          f"(assembly {setup['assembly_ms_per_artifact']} ms per artifact in the fleet)")
    print(f"{'':<34}{'seconds':>10}{'decisions/s':>14}")
    print(f"{'evaluate_day (replay included)':<34}{eval_s:>10.2f}{figures['eval_decisions_per_s']:>14,.1f}")
    print(f"{'ceiling (replay work + scoring)':<34}{ceiling_s + peer_s:>10.2f}{figures['ceiling_decisions_per_s']:>14,.1f}")
    print(f"{'peer (scoring only, no replay)':<34}{peer_s:>10.2f}{figures['peer_score_only_decisions_per_s']:>14,.1f}")
    for name, held in goals.items():
        print(f"goal {name}: {'met' if held else 'NOT met'}")
    print(json.dumps({"bench": "eval", "figures": figures, "ratios": ratios, "goals": goals}))


if __name__ == "__main__":
    main()
