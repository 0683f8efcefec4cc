"""Start `make run`'s stack (the launcher) for end-to-end tests, and stop it for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_platform(home: Path, *, demo_rate: float = 2.0, timeout: float = 120.0) -> Iterator[str]:
    """Run the launcher on a free port with its own home; yields the UI's base URL."""
    port = free_port()
    env = {
        **os.environ,
        "AGENTLAKE_HOME": str(home),
        "AGENTLAKE_UI_PORT": str(port),
        "AGENTLAKE_AUDIT_PORT": os.environ.get("AGENTLAKE_AUDIT_PORT") or str(free_port()),
        "AGENTLAKE_SOURCES_API_PORT": os.environ.get("AGENTLAKE_SOURCES_API_PORT") or str(free_port()),
        "AGENTLAKE_DEMO_RATE": str(demo_rate),
    }
    log = open(home.parent / "platform.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "platform_defs.launcher"], cwd=PROJECT_ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), signal.signal(signal.SIGTERM, signal.SIG_DFL)),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the platform exited early; see {home.parent / 'platform.log'}")
            try:
                with urllib.request.urlopen(url + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Dagster UI did not answer on {url} within {timeout}s")
            time.sleep(0.5)
        yield url
    finally:
        # The launcher stops its children on SIGINT, as Ctrl-C would; SIGKILL the group if it hangs.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def dismiss_prompts(page: Any) -> None:
    """Close the Dagster UI's community/newsletter dialog whenever it shows: it covers the page and
    takes every click until it is dismissed, and it may show at any moment after the first load."""
    dialog = page.get_by_text("Join the Dagster community")
    page.add_locator_handler(dialog, lambda: page.get_by_role("button", name="Skip").click())


def run_with_peak(code: str, *args: str, timeout: float = 600) -> tuple[str, int]:
    """Run ``code`` in a Python process of its own; (what it printed, its peak resident memory in MB).

    The peak is the process's own VmHWM, read as it ends: ``ru_maxrss`` would carry the test
    process's memory over the exec, and a test's earlier allocations would hide the peak.
    """
    probe = ("\nimport re as _re\n"
             "print(int(_re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code + probe, *args], capture_output=True, text=True, check=True,
                         timeout=timeout).stdout.strip()
    printed, _, peak = out.rpartition("\n")
    return printed, int(peak)
