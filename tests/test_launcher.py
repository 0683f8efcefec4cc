"""`make run`'s launcher: a short banner on the terminal, Dagster's own output in a log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlake.config import Settings
from platform_defs.launcher import banner
from tests.platform import running_platform

_LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def _code_location(url: str, timeout: float = 90.0) -> tuple[str, str]:
    """The UI's one code location and its load status, once it has finished loading."""
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url + "/graphql", data=json.dumps({"query": _LOCATIONS}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            (entry,) = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
        if entry["loadStatus"] != "LOADING" or time.monotonic() > deadline:
            return entry["name"], entry["loadStatus"]
        time.sleep(1)


@pytest.mark.unit
def test_the_banner_names_the_ui_the_data_the_logs_and_how_to_stop_but_no_password(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_UI_PORT": "3999",
        "AGENTLAKE_CATALOG_URI": "postgresql+psycopg2://lake:canary-pw-7f3@db.internal:5432/catalog",
    })
    text = banner(settings)
    assert "http://127.0.0.1:3999" in text and str(tmp_path) in text and "Ctrl-C" in text
    assert str(tmp_path / "logs" / "dagster.log") in text
    assert "postgresql+psycopg2://db.internal:5432/catalog" in text
    assert "canary-pw-7f3" not in text and "lake:" not in text


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_launcher_prints_the_banner_and_sends_dagster_output_to_the_log_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_platform(home, demo_rate=0) as url:
        status = _code_location(url)
    assert status == ("agentlake", "LOADED")
    terminal = (tmp_path / "platform.log").read_text()  # what `make run` shows
    assert f"UI        {url}" in terminal and f"data      {home}" in terminal and "Ctrl-C" in terminal
    assert str(home / "logs" / "dagster.log") in terminal
    # Dagster's event stream (webserver, daemon, code server) is in the log file, not on the terminal.
    dagster_log = (home / "logs" / "dagster.log").read_text()
    assert "dagster-webserver" in dagster_log and "dagster.daemon" in dagster_log
    assert "dagster-webserver" not in terminal and "dagster.daemon" not in terminal
    assert len(terminal.splitlines()) <= 10, terminal
