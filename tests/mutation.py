"""Planted mutations of the guarantee code: each one breaks a guarantee, and some test must fail.

A suite that passes whatever the code does proves nothing. Each mutation below replaces one
exact piece of the code that keeps a guarantee (the ledger, write-once puts, the publish's
ancestry check, checksums, reconciliation, the cursor, the SQL sandbox, safe deletion, signatures,
the log's claims, replay's pointer check) with a broken version, runs the tests that cover it in a
copy of the project, and counts the mutation as caught when they fail.

Run it with ``make mutation`` (or ``python tests/mutation.py``); it prints a table and ends with one
JSON line. The exit status is 1 if any mutation survived.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("ledger: a segment inside a recorded range counts as new", "agentlake/tables/ledger.py",
             "            if lo <= seg.first_seq and seg.last_seq <= hi:\n                return True",
             "            if lo <= seg.first_seq and seg.last_seq <= hi:\n                return False",
             ("tests/test_ingest.py",)),
    Mutation("write-once: put_once overwrites", "agentlake/storage/store.py",
             'obstore.put(self._inner, key, data, mode="create")', 'obstore.put(self._inner, key, data, mode="overwrite")',
             ("tests/test_store_contract.py",)),
    Mutation("publish: main moves to the branch without the ancestry check", "agentlake/gate/publish.py",
             "fast_forward = main is not None and is_ancestor_of(head, main, table.metadata)",
             "fast_forward = main is not None",
             ("tests/test_quality_gate.py",)),
    Mutation("log: a segment's checksum is not checked", "agentlake/log/reader.py",
             "if expected is not None and source.digest() != expected:",
             "if False and expected is not None and source.digest() != expected:",
             ("tests/test_log.py",)),
    Mutation("cursor: a segment stamped in the future is handed out", "agentlake/log/reader.py",
             'if seg.arrival <= due]', 'if seg.arrival <= due or True]',
             ("tests/test_log.py",)),
    Mutation("reconcile: balanced while segments are held", "agentlake/pipeline/reconcile.py",
             "and not self.segments_held and", "and",
             ("tests/test_quality_gate.py",)),
    Mutation("sandbox: functions that read outside the lake are allowed", "agentlake/context/sandbox.py",
             "if called in _REFUSED_FUNCTIONS or called.startswith(_REFUSED_PREFIXES):", "if False:",
             ("tests/test_sql_sandbox.py",)),
    Mutation("sandbox: any statement type runs", "agentlake/context/sandbox.py",
             "if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:",
             "if len(statements) != 1:",
             ("tests/test_sql_sandbox.py",)),
    Mutation("maintenance: deletes outside the table's folders", "agentlake/maintenance/maintain.py",
             "if not path.startswith(self._folders):", "if False:",
             ("tests/test_maintenance.py",)),
    Mutation("signing: an unsigned record passes", "agentlake/storage/signing.py",
             "    if not isinstance(given, str):\n", "    if False:\n",
             ("tests/test_context.py",)),
    Mutation("signing: a wrong signature passes", "agentlake/storage/signing.py",
             "if not any(hmac.compare_digest(given, _digest(k, record)) for k in (key, *previous)):", "if False:",
             ("tests/test_context.py",)),
    Mutation("log: a segment's signature is not checked against its key and content", "agentlake/storage/signing.py",
             "if not any(hmac.compare_digest(signature, segment_signature(k, unsigned_key, sha256)) for k in (key, *previous)):",
             "if False:",
             ("tests/test_log.py",)),
    Mutation("log: a segment lying about its lines is ingested", "agentlake/pipeline/ingest.py",
             "if lines_read != seg.lines:", "if False:",
             ("tests/test_ingest.py",)),
    Mutation("replay: a redirected run pointer is trusted", "agentlake/context/replay.py",
             "if by_run and report.run_id != ref:", "if False:",
             ("tests/test_context.py",)),
    Mutation("reader: an oversized line passes as a line", "agentlake/log/events.py",
             "if line.startswith(_OVERSIZED_MARK):", "if False:",
             ("tests/test_log.py",)),
)


def _copy() -> Path:
    target = Path(tempfile.mkdtemp(prefix="agentlake-mutation-")) / "project"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".venv", ".tools", ".git", "__pycache__",
                                                                 ".agentlake", ".pytest_cache", ".mypy_cache"))
    return target


def _pytest(project: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=project, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(project.parent), "PYTHONPATH": str(project)})


def run(mutation: Mutation, project: Path) -> tuple[bool, float, str]:
    """Plant the mutation in ``project``, run its tests, restore; (caught, seconds, detail)."""
    path = project / mutation.path
    source = path.read_text()
    if source.count(mutation.original) != 1:
        return False, 0.0, f"the code to mutate was not found exactly once in {mutation.path}: update the mutation"
    path.write_text(source.replace(mutation.original, mutation.mutated))
    started = time.perf_counter()
    try:
        done = _pytest(project, mutation.tests)
    finally:
        path.write_text(source)
    seconds = time.perf_counter() - started
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode == 5:
        return False, seconds, "no test ran"
    return done.returncode != 0, seconds, last


def main() -> int:
    project = _copy()
    rows = []
    try:
        # The control: unmutated, every selection passes, so a failure below is the mutation's doing.
        for tests in sorted({m.tests for m in MUTATIONS}):
            control = _pytest(project, tests)
            if control.returncode != 0:
                print(f"the unmutated project fails {' '.join(tests)}: {control.stdout[-2000:]}")
                return 2
        for mutation in MUTATIONS:
            caught, seconds, detail = run(mutation, project)
            rows.append((mutation.name, caught, seconds, detail))
            print(f"{'caught  ' if caught else 'SURVIVED'} {seconds:6.1f}s  {mutation.name}  [{detail}]", flush=True)
    finally:
        shutil.rmtree(project.parent, ignore_errors=True)
    caught_count = sum(1 for _, caught, _, _ in rows if caught)
    print(f"\n{caught_count} of {len(rows)} planted mutations caught")
    print(json.dumps({"bench": "mutation", "figures": {"mutations": len(rows), "caught": caught_count},
                      "ratios": {"score": round(caught_count / len(rows), 3)},
                      "survived": [name for name, caught, _, _ in rows if not caught]}))
    return 0 if caught_count == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
