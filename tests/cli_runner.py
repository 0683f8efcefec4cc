"""Many ``agentlake`` commands answered by one Python process, to keep the CLI tests quick.

Each command is ``agentlake.cli.main(argv)`` with its own environment, standard streams and exit
status, exactly what the ``agentlake`` entry point runs (an uncaught exception prints its traceback
into the command's stderr); only the interpreter and the CLI's imports start once per batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RUNNER = """
import io, json, os, sys, traceback
from agentlake import cli

real_out = sys.stdout
for case in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(case["env"])
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sys.stdout, sys.stderr, sys.stdin = out, err, open(os.devnull)
    try:
        code = cli.main(case["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdin.close()
        sys.stdout, sys.stderr = real_out, sys.__stderr__
    out.flush()
    err.flush()
    answer = {"code": code, "stdout": out.buffer.getvalue().decode("utf-8", "replace"),
              "stderr": err.buffer.getvalue().decode("utf-8", "replace")}
    real_out.write(json.dumps(answer) + "\\n")
    real_out.flush()
"""


def run_in_one_process(commands: Sequence[tuple[Sequence[str], Mapping[str, str]]], *, env: Mapping[str, str],
                       cwd: Path, timeout: float = 600) -> list[subprocess.CompletedProcess[str]]:
    """Run each ``(argv, environment)`` in turn in one new process; one answer per command, in order."""
    payload = [{"argv": list(argv), "env": dict(command_env)} for argv, command_env in commands]
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(payload), env=dict(env), cwd=cwd,
                          text=True, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(payload), done.stderr[-3000:]
    return [subprocess.CompletedProcess(list(argv), a["code"], a["stdout"], a["stderr"])
            for (argv, _), a in zip(commands, answers, strict=True)]
