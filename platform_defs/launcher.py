"""`make run`: start the platform on its embedded default with the UI and a demo fleet.

Creates AGENTLAKE_HOME (object store folder, Iceberg SQLite catalog, Dagster instance),
writes dagster.yaml, starts `dagster dev` (webserver and daemon) on 127.0.0.1 and the demo
workload, and stops everything it started on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentlake.storage.catalog import open_catalog
from platform_defs.environment import instance_yaml, resolve_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _reset_signals() -> None:
    # A parent shell may have left SIGINT/SIGTERM ignored; children must obey them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, start_new_session=True, preexec_fn=_reset_signals)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main() -> int:
    settings = resolve_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    open_catalog(settings)  # the SQLite catalog exists from the first start
    (settings.dagster_home / "dagster.yaml").write_text(instance_yaml(settings))
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "AGENTLAKE_HOME": str(settings.home)}
    bin_dir = Path(sys.executable).parent
    procs = [
        _start(
            [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(settings.ui_port), "-w",
             str(PROJECT_ROOT / "workspace.yaml")],
            env,
        )
    ]
    if settings.demo_rate > 0:
        procs.append(
            _start([sys.executable, "-m", "agentlake.cli", "demo", "--forever", "--rate", str(settings.demo_rate),
                    "--bad-share", "0.01"], env)
        )
    print(
        f"AgentLake is starting: UI on http://127.0.0.1:{settings.ui_port} (home {settings.home}). Ctrl-C stops it.",
        flush=True,
    )
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stopping:
            if any(proc.poll() is not None for proc in procs):
                print("agentlake: a platform process exited; stopping the rest", file=sys.stderr, flush=True)
                break
            time.sleep(0.5)
    finally:
        for proc in reversed(procs):
            _stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
