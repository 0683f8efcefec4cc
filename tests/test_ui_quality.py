"""End to end: a batch held back by the quality gate, as an operator sees it in the Dagster UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.platform import CHROMIUM_ARGS, dismiss_prompts, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(500)]


def test_checks_tab_shows_the_failed_blocking_check_and_its_expectation(
    tmp_path: Path, browser_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    # A fleet epoch in the future: every event breaks ts_after_fleet_epoch, so every line of a batch
    # is quarantined and the blocking batch check on the share of quarantined lines fails.
    monkeypatch.setenv("AGENTLAKE_QUALITY_FLEET_EPOCH", "2100-01-01T00:00:00Z")
    with running_platform(tmp_path / "home") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        dismiss_prompts(page)
        failed = page.get_by_text("Failed", exact=True).locator("visible=true").first
        for _ in range(30):
            # The staged asset's checks tab, the blocking check, its execution history.
            page.goto(f"{url}/assets/raw/events_staged?view=checks", wait_until="domcontentloaded")
            try:
                check = page.get_by_text("quality_quaran", exact=False).locator("visible=true").first
                check.wait_for(timeout=20_000)
                check.click(timeout=10_000)
                page.get_by_text("Execution history").locator("visible=true").first.click(timeout=10_000)
                failed.wait_for(timeout=10_000)
                break
            except PageTimeout:  # no ingest run has evaluated it yet: reload
                continue
        failed.wait_for(timeout=10_000)
        page.get_by_text("at most 50% of the batch's lines are quarantined").locator("visible=true").first.wait_for()
        page.screenshot(path=str(tmp_path / "check-history.png"))
        # The check's overview names the Great Expectations expectation behind the rule.
        page.get_by_text("Overview").locator("visible=true").last.click()
        page.get_by_text("ExpectColumnValuesToBeBetween", exact=False).locator("visible=true").first.wait_for(
            timeout=30_000)
        page.screenshot(path=str(tmp_path / "check.png"))
        browser.close()
