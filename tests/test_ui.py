"""End to end: `make run`'s stack in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.platform import CHROMIUM_ARGS, chromium_path, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


def test_ui_shows_the_raw_event_log_in_the_asset_graph(tmp_path: Path, browser_path: str) -> None:
    from playwright.sync_api import sync_playwright

    with running_platform(tmp_path / "home") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
        node = page.get_by_text("raw_event_log").first
        node.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "asset-graph.png"))
        # The asset's page tells a new user what the log is.
        page.goto(f"{url}/assets/raw_event_log", wait_until="domcontentloaded")
        page.get_by_text("write-once", exact=False).first.wait_for(timeout=60_000)
        browser.close()
