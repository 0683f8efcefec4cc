"""A process that ingests the log (or rebuilds facts) and may die on the way: the subject of test_kill.

    python -m tests.ingest_worker ingest  --home H [--gated] [--progress F] [--done F] [--kill-at STAGE [--occurrence N]]
    python -m tests.ingest_worker rebuild --home H --day D [--day D ...] [same options]

With ``--gated`` it ingests through the quality gate with the deployment's policy, as the CLI and
Dagster do: stage on a branch, audit with Great Expectations, publish to ``main``.

It prints ``ready`` once its imports are done (the parent times its kills from there; the lake,
catalog and tables are opened after that line, so a kill can land there too). Each checkpoint
stage it reaches is appended to the progress file as ``<seconds since ready> <stage>``, flushed
before the stage's work continues. With ``--kill-at`` it sends itself SIGKILL the N-th time it
reaches that stage. When everything is done it writes the ingest report to the done file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import orjson

from agentlake.config import Settings
from agentlake.gate.suites import QualityPolicy
from agentlake.pipeline.facts import rebuild_facts
from agentlake.pipeline.flow import ingest_pending_then_facts
from agentlake.pipeline.stage import IngestOptions, IngestReport
from agentlake.tables.lake import Lake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ingest_worker")
    parser.add_argument("action", choices=("ingest", "rebuild"))
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--day", action="append", default=[], help="rebuild: the arrival days to rebuild")
    parser.add_argument("--progress", type=Path, help="append each checkpoint stage reached here")
    parser.add_argument("--done", type=Path, help="write the report here when finished")
    parser.add_argument("--kill-at", help="SIGKILL this process when the checkpoint reaches this stage")
    parser.add_argument("--gated", action="store_true", help="through the quality gate, as the CLI and Dagster")
    parser.add_argument("--occurrence", type=int, default=1, help="... for the N-th time (default 1)")
    args = parser.parse_args(argv)
    if args.action == "rebuild" and not args.day:
        parser.error("rebuild needs at least one --day")

    started = time.monotonic()
    progress = args.progress.open("a", encoding="utf-8") if args.progress else None
    reached: dict[str, int] = {}

    def checkpoint(stage: str) -> None:
        reached[stage] = reached.get(stage, 0) + 1
        if progress is not None:
            progress.write(f"{time.monotonic() - started:.4f} {stage}\n")
            progress.flush()
        if stage == args.kill_at and reached[stage] == args.occurrence:
            os.kill(os.getpid(), signal.SIGKILL)

    print("ready", flush=True)
    lake = Lake(Settings(home=args.home.resolve()))
    quality = QualityPolicy.from_settings(lake.settings) if args.gated else None
    options = IngestOptions(run_id=f"worker-{os.getpid()}", checkpoint=checkpoint, quality=quality)
    report = IngestReport()
    if args.action == "ingest":
        report = ingest_pending_then_facts(lake, options)
    else:
        for day in args.day:
            report.merge(rebuild_facts(lake, day, options))
    report.seconds = time.monotonic() - started
    if args.done is not None:
        args.done.write_bytes(orjson.dumps(report.as_dict()))
    if progress is not None:
        progress.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
