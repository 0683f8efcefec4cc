"""End to end: `make run`'s stack in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.platform import CHROMIUM_ARGS, dismiss_prompts, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_ui_shows_the_log_the_sensor_runs_and_the_ingested_tables(
    tmp_path: Path, browser_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    # The sensor ticks every 5 s here (60 s by default) so the test need not wait a minute; the
    # evaluation sensor every 20 s (300 s by default).
    monkeypatch.setenv("AGENTLAKE_INGEST_INTERVAL_S", "5")
    monkeypatch.setenv("AGENTLAKE_EVAL_INTERVAL_S", "10")
    home = tmp_path / "home"
    with running_platform(home) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        dismiss_prompts(page)
        # The asset graph (the log's lineage) holds the raw event log and the tables built from it.
        page.goto(f"{url}/assets/raw_event_log?view=lineage", wait_until="domcontentloaded")
        page.get_by_text("raw_event_log").first.wait_for(timeout=60_000)
        page.get_by_text("quarantine").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "asset-graph.png"))
        # The asset's page tells a new user what the log is.
        page.goto(f"{url}/assets/raw_event_log", wait_until="domcontentloaded")
        page.get_by_text("write-once", exact=False).first.wait_for(timeout=60_000)
        # Nobody clicks anything: the sensor launches ingest runs for the demo fleet's segments.
        page.goto(f"{url}/runs", wait_until="domcontentloaded")
        page.get_by_text("agentlake/lane", exact=False).first.wait_for(timeout=150_000)
        # Read the runs' states, not only their presence: a run has succeeded, and none failed.
        for _ in range(30):
            page.goto(f"{url}/runs", wait_until="domcontentloaded")
            try:
                page.get_by_text("Success", exact=True).locator("visible=true").first.wait_for(timeout=10_000)
                break
            except PageTimeout:
                continue
        page.get_by_text("Success", exact=True).locator("visible=true").first.wait_for(timeout=10_000)
        assert page.get_by_text("Failure", exact=True).locator("visible=true").count() == 0
        page.screenshot(path=str(tmp_path / "runs.png"))
        # raw/events was materialized with its Iceberg snapshot and reconciliation.
        for _ in range(30):
            page.goto(f"{url}/assets/raw/events", wait_until="domcontentloaded")
            try:
                page.get_by_text("snapshot_id", exact=False).first.wait_for(timeout=10_000)
                break
            except PageTimeout:  # not materialized yet: reload the page
                continue
        page.get_by_text("snapshot_id", exact=False).first.wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "raw-events.png"))
        # Read a figure: the overview's row count of raw/events is a number above zero.
        counted = re.search(r"Row count\s+([\d,]+)", page.locator("body").inner_text())
        assert counted and int(counted.group(1).replace(",", "")) > 0, "raw/events shows no row count"
        # The reconciliation check of raw/events passed: read its state on the checks tab.
        page.goto(f"{url}/assets/raw/events?view=checks", wait_until="domcontentloaded")
        page.get_by_text("reconciliation", exact=True).locator("visible=true").first.wait_for(timeout=60_000)
        page.get_by_text("Succeeded", exact=True).locator("visible=true").first.wait_for(timeout=60_000)
        text = page.locator("body").inner_text()
        after = text[text.index("reconciliation"):][:300]
        assert "Succeeded" in after and "Failed" not in after, after
        page.screenshot(path=str(tmp_path / "raw-events-checks.png"))
        # Nobody acting: the evaluation sensor evaluates the day; eval/daily's latest materialization shows its
        # reproducibility figure (a number; the column of that name in its schema says "double").
        rate = None
        for _ in range(60):
            page.goto(f"{url}/assets/eval/daily", wait_until="domcontentloaded")
            try:
                page.get_by_text("reproducible_rate", exact=True).first.wait_for(timeout=10_000)
            except PageTimeout:
                continue
            # A metadata row reads "name, time of the materialization, value".
            rate = re.search(r"reproducible_rate\s+(?:\w{3} \d+, [\d:]+ [AP]M\s+)?(\d+(?:\.\d+)?)\b",
                             page.locator("body").inner_text())
            if rate:
                break
            page.wait_for_timeout(5_000)
        assert rate and float(rate.group(1)) == 1.0, "eval/daily shows no reproducible_rate of 1.0"
        page.screenshot(path=str(tmp_path / "eval-daily.png"))
        browser.close()
        _assert_agents_read_their_context(home)


def _assert_agents_read_their_context(home: Path) -> None:
    """The demo fleet of `make run` made context artifacts, and each of its reading decisions names one."""
    import orjson

    from agentlake.config import Settings
    from agentlake.context.assembly import load_artifact
    from agentlake.context.query import query
    from agentlake.sources.agents import READING_KINDS
    from agentlake.tables.lake import Lake

    lake = Lake(Settings.from_env({"AGENTLAKE_HOME": str(home)}))
    rows = query(lake, "SELECT agent_id, run_id, attributes FROM facts.decisions").to_pylist()
    reading = [r for r in rows if r["agent_id"] in READING_KINDS]
    assert reading, "no decision of a reading agent was ingested"
    for row in reading:
        key = orjson.loads(row["attributes"]).get("context_artifact")
        assert key, f"decision of run {row['run_id']} names no context artifact"
        assert load_artifact(lake.store, key).manifest["run_id"] == row["run_id"]
