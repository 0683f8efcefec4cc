"""End to end: `make run`'s stack in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.platform import CHROMIUM_ARGS, dismiss_prompts, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(500)]


def test_ui_shows_the_log_the_sensor_runs_and_the_ingested_tables(
    tmp_path: Path, browser_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    # The sensor ticks every 5 s here (60 s by default) so the test need not wait a minute.
    monkeypatch.setenv("AGENTLAKE_INGEST_INTERVAL_S", "5")
    with running_platform(tmp_path / "home") as url, sync_playwright() as p:
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
        import re

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
        browser.close()
