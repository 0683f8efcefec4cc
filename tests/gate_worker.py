"""A process that ingests the log through the quality gate and SIGKILLs itself at one checkpoint.

    python -m tests.gate_worker --home H --kill-at STAGE

The subject of the gate's kill tests (tests/test_quality_gate.py): it dies between write, audit
and publish exactly where asked, with nothing cleaned up.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from agentlake.config import Settings
from agentlake.gate.suites import QualityPolicy
from agentlake.pipeline.ingest import ingest_pending
from agentlake.pipeline.stage import IngestOptions
from agentlake.tables.lake import Lake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.gate_worker")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--kill-at", required=True, help="SIGKILL this process when the checkpoint reaches this stage")
    parser.add_argument("--max-quarantine-share", type=float, default=0.3)
    args = parser.parse_args(argv)

    def checkpoint(stage: str) -> None:
        if stage == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    lake = Lake(Settings(home=args.home.resolve()))
    options = IngestOptions(run_id=f"gate-worker-{os.getpid()}", checkpoint=checkpoint,
                            quality=QualityPolicy(max_quarantine_share=args.max_quarantine_share))
    ingest_pending(lake, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
