"""`make run`: start the platform on its embedded default with the UI and a demo fleet.

Creates AGENTLAKE_HOME (object store folder, Iceberg SQLite catalog, Dagster instance),
writes dagster.yaml, starts `dagster dev` (webserver and daemon) on 127.0.0.1, the read-only audit
pages beside it (platform_defs/audit_page.py) and the demo workload, creates the demo helpdesk
database (when no AGENTLAKE_SOURCES_SQL_URL names another), serves its read-only REST API on
127.0.0.1 (``AGENTLAKE_SOURCES_API_PORT``, unless AGENTLAKE_SOURCES_API_URL names another API) and
moves it one simulated minute on every minute, so the sources the ``sources`` schedule loads really change, prints a short banner (the UI's address, where the data lives, the log file, how to
stop), and stops everything it started on Ctrl-C or SIGTERM. Dagster's own event stream goes to
``AGENTLAKE_HOME/logs/dagster.log`` rather than the terminal, where it would bury the banner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from agentlake.config import Settings
from agentlake.sources import helpdesk
from agentlake.sources.demo import write_demo_documents
from agentlake.storage.catalog import describe_catalog, open_catalog
from agentlake.storage.retry import describe_store
from platform_defs.environment import instance_yaml, resolve_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HELPDESK_ADVANCE_S = 60.0  # real seconds per simulated minute of the demo helpdesk


def _reset_signals() -> None:
    # A parent shell may have left SIGINT/SIGTERM ignored; children must obey them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_reset_signals)


def log_dir(settings: Settings) -> Path:
    """Where the platform's processes write their output: ``AGENTLAKE_HOME/logs``."""
    return settings.home / "logs"


def banner(settings: Settings) -> str:
    """What a newcomer needs on starting: the UI, where the data lives, the logs, how to stop."""
    logs = log_dir(settings)
    return "\n".join([
        "AgentLake is starting (the UI answers in a few seconds).",
        f"  UI        http://127.0.0.1:{settings.ui_port}",
        f"  audit     http://127.0.0.1:{settings.audit_port}/audit/RUN_ID  (read-only)",
        f"  data      {settings.home}  (AGENTLAKE_HOME)",
        f"  store     {describe_store(settings)}",
        f"  catalog   {describe_catalog(settings.resolved_catalog_uri)}",
        *([f"  helpdesk  http://127.0.0.1:{settings.sources_api_port}/api/v1/comments  (demo REST API, read-only)"]
          if settings.sources_sql_url is None and settings.sources_api_url is None else []),
        f"  logs      {logs / 'dagster.log'}, {logs / 'audit.log'}" + (f", {logs / 'demo.log'}" if settings.demo_rate > 0 else ""),
        "  stop      Ctrl-C",
    ])


def demo_helpdesk(settings: Settings) -> Path | None:
    """The demo helpdesk database, created if missing (None: the sources read another database), and the demo
    documents in the documents folder, when it is the default one."""
    if settings.sources_documents_dir is None:
        write_demo_documents(settings.documents_dir)
    if settings.sources_sql_url is not None:
        return None
    return helpdesk.create(settings.sources_home / "helpdesk.db").path


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
    helpdesk_db = demo_helpdesk(settings)
    try:
        api = helpdesk.serve(helpdesk_db, port=settings.sources_api_port) if helpdesk_db is not None and (
            settings.sources_api_url is None) else None
    except OSError as exc:
        print(f"agentlake: the demo helpdesk API cannot listen on 127.0.0.1:{settings.sources_api_port} "
              f"({exc.strerror}); set AGENTLAKE_SOURCES_API_PORT to a free port", file=sys.stderr)
        return 1
    (settings.dagster_home / "dagster.yaml").write_text(instance_yaml(settings))
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "AGENTLAKE_HOME": str(settings.home)}
    if api is not None:  # the helpdesk_api source reads the API served here
        env["AGENTLAKE_SOURCES_API_URL"] = f"http://127.0.0.1:{settings.sources_api_port}"
    bin_dir = Path(sys.executable).parent
    log_dir(settings).mkdir(parents=True, exist_ok=True)
    # Appended, not truncated: the log of an earlier start is still there to read after a restart.
    dagster_log = open(log_dir(settings) / "dagster.log", "ab")  # noqa: SIM115 - closed in the finally below
    logs = [dagster_log]
    procs = [
        _start(
            [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(settings.ui_port), "-w",
             str(PROJECT_ROOT / "workspace.yaml")],
            env, dagster_log,
        )
    ]
    audit_log = open(log_dir(settings) / "audit.log", "ab")  # noqa: SIM115 - closed in the finally below
    logs.append(audit_log)
    procs.append(_start([sys.executable, "-m", "platform_defs.audit_page"], env, audit_log))
    if settings.demo_rate > 0:
        demo_log = open(log_dir(settings) / "demo.log", "ab")  # noqa: SIM115 - closed in the finally below
        logs.append(demo_log)
        procs.append(
            _start([sys.executable, "-m", "agentlake.cli", "demo", "--forever", "--rate", str(settings.demo_rate),
                    "--bad-share", "0.01"], env, demo_log)
        )
    print(banner(settings), flush=True)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    advanced = time.monotonic()
    try:
        while not stopping:
            if helpdesk_db is not None and time.monotonic() - advanced >= HELPDESK_ADVANCE_S:
                helpdesk.advance(helpdesk_db, 1)
                advanced = time.monotonic()
            if any(proc.poll() is not None for proc in procs):
                print(f"agentlake: a platform process exited; stopping the rest (see {log_dir(settings)})",
                      file=sys.stderr, flush=True)
                break
            time.sleep(0.5)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for log in logs:
            log.close()
        if api is not None:
            api.shutdown()
            api.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
