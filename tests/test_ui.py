"""End to end: `make run`'s stack in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import free_port
from tests.platform import CHROMIUM_ARGS, PROJECT_ROOT, dismiss_prompts, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def test_output() -> Path | None:
    """Where screenshots are kept after the run (``AGENTLAKE_TEST_OUTPUT``, read before any test hides it)."""
    folder = os.environ.get("AGENTLAKE_TEST_OUTPUT")
    return Path(folder) if folder else None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, browser_path: str,
             test_output: Path | None) -> Iterator[tuple[str, Path, str]]:
    """`make run`'s stack, started once for the tests of this module: (UI's URL, home, audit pages' port)."""
    home = tmp_path_factory.mktemp("ui") / "home"
    audit_port = str(free_port())
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):  # as isolated_env does for each test: none of the developer's settings
            if name.startswith(("AGENTLAKE_", "AWS_")) or name == "DAGSTER_HOME":
                env.delenv(name)
        # The log sensor ticks every 5 s here (60 s by default) so the tests need not wait a minute.
        env.setenv("AGENTLAKE_INGEST_INTERVAL_S", "5")
        env.setenv("AGENTLAKE_EVAL_INTERVAL_S", "10")  # the evaluation sensor: every 10 s (300 s by default)
        env.setenv("AGENTLAKE_AUDIT_PORT", audit_port)
        with running_platform(home) as url:
            yield url, home, audit_port


def test_ui_shows_the_log_the_sensor_runs_and_the_ingested_tables(
    tmp_path: Path, browser_path: str, platform: tuple[str, Path, str]
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    url, home, _ = platform
    with sync_playwright() as p:
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
        # A sensor's ingest run may be evaluating it right now ("In Progress"): read again until its
        # latest evaluation has ended, then require that it succeeded.
        for _ in range(30):
            page.goto(f"{url}/assets/raw/events?view=checks", wait_until="domcontentloaded")
            page.get_by_text("reconciliation", exact=True).locator("visible=true").first.wait_for(timeout=60_000)
            page.get_by_text("Succeeded", exact=True).locator("visible=true").first.wait_for(timeout=60_000)
            text = page.locator("body").inner_text()
            after = text[text.index("reconciliation"):][:300]
            if "In Progress" not in after.splitlines()[:3]:  # the check's name, twice, then its state
                break
            page.wait_for_timeout(5_000)
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
        _assert_marts_and_evaluation_materialized_with_passing_checks(url)


def _cli(home: Path, audit_port: str, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLAKE_", "AWS_"))}
    env.update(AGENTLAKE_HOME=str(home), AGENTLAKE_AUDIT_PORT=audit_port, DAGSTER_HOME=str(home / "dagster"))
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_an_auditor_walks_from_the_asset_catalog_to_a_decision_s_snapshots_checks_and_segments(
    tmp_path: Path, browser_path: str, platform: tuple[str, Path, str], test_output: Path | None
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    url, home, audit_port = platform
    shots = (test_output or tmp_path) / "audit-walk"
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the audit walk: {shots}")
    agentlake = [sys.executable, "-m", "agentlake.cli"]
    # A demo decision whose run the sensor's ingest and facts runs have published: of the coding agent,
    # which reads no context, so the artifact audited is the one this test builds (over raw.events).
    deadline, run_id = time.monotonic() + 300, None
    sql = ("SELECT e.run_id FROM raw.events e JOIN facts.agent_runs r ON e.run_id = r.run_id "
           "WHERE e.type = 'decision' AND e.agent_id = 'coding' ORDER BY e.run_id LIMIT 1")
    while run_id is None and time.monotonic() < deadline:
        rows = orjson.loads(_cli(home, audit_port, *agentlake, "query", "--json", sql))["rows"]
        run_id = rows[0]["run_id"] if rows else None
        if run_id is None:
            time.sleep(5)
    assert run_id, "no demo decision was ingested with its facts within 5 minutes"
    spec = tmp_path / "spec.json"
    spec.write_bytes(orjson.dumps({"sources": [
        {"name": "history", "table": "raw.events", "where": [["run_id", "=", run_id]], "order_by": ["ts"]},
        {"name": "run", "table": "facts.agent_runs", "where": [["run_id", "=", run_id]]},
    ]}))
    built = orjson.loads(_cli(home, audit_port, *agentlake, "context", "build", "--json", "--run-id", run_id,
                              "--agent-id", "support-triage", "--spec", str(spec)))
    day = built["key"].split("dt=")[1][:10]
    _cli(home, audit_port, str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
         "platform_defs.definitions", "-a", "defs", "--select", "context_artifacts", "--partition", day)
    trail = orjson.loads(_cli(home, audit_port, *agentlake, "audit", "--json", run_id))
    pins = {p["table"]: p for p in trail["pins"]}
    assert pins["raw.events"]["dagster_run_id"], "the sensor's ingest run is recorded by its commit"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        dismiss_prompts(page)
        page.goto(f"{url}/assets", wait_until="domcontentloaded")
        entry = page.get_by_role("link", name="context_artifacts").first
        entry.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "0-asset-catalog.png"))
        entry.click()  # 1: the index's asset page
        page.get_by_text("Events", exact=True).locator("visible=true").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "1-context-artifacts.png"))
        page.get_by_text("Events", exact=True).locator("visible=true").first.click()  # 2: its materializations
        link = page.locator(f'a[href$="/audit/{run_id}"]').locator("visible=true").first
        link.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "2-latest-materialization.png"), full_page=True)
        try:
            with page.context.expect_page(timeout=10_000) as opened:
                link.click()  # 3: the decision's audit page
            walk = opened.value
        except PageTimeout:  # the link opened in the same tab
            walk = page
        walk.get_by_text("Pinned snapshots").wait_for(timeout=120_000)
        walk.screenshot(path=str(shots / "3-audit-page.png"), full_page=True)
        text = walk.locator("body").inner_text()
        assert trail["artifact"]["key"] in text and "reproducible" in text
        for pin in trail["pins"]:
            assert str(pin["snapshot_id"]) in text
            if pin["dagster_run_id"]:
                assert walk.locator(f'a[href="{url}/runs/{pin["dagster_run_id"]}"]').count() >= 1
        assert "validation" in text and "passed" in text and "no validation result" in text
        assert trail["segments"] and all(s["key"] in text for s in trail["segments"])
        assert "TAMPERED" not in text
        browser.close()


_ASSET_STATE = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetMaterializations(limit: 1) { runId partition }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } } }"""


def _assert_marts_and_evaluation_materialized_with_passing_checks(url: str) -> None:
    """Nobody acting: the dbt marts and every eval asset were materialized by the sensors' runs, and each of
    their asset checks passed on its latest materialization (read through the UI's GraphQL)."""
    import urllib.request

    keys = [["marts", "agent_daily_kpis"], ["marts", "eval_decisions_base"],
            ["eval", "decisions"], ["eval", "daily"], ["eval", "comparisons"]]
    deadline, state = time.monotonic() + 300, {}
    while time.monotonic() < deadline:
        for key in keys:
            body = orjson.dumps({"query": _ASSET_STATE, "variables": {"key": {"path": key}}})
            request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as resp:
                node = orjson.loads(resp.read())["data"]["assetNodeOrError"]
            checks = {c["name"]: (c["executionForLatestMaterialization"] or {}).get("status")
                      for c in node["assetChecksOrError"]["checks"]}
            state["/".join(key)] = (bool(node["assetMaterializations"]), checks)
        if all(done and all(s in ("SUCCEEDED", "FAILED") for s in checks.values())
               for done, checks in state.values()):
            break
        time.sleep(5)
    assert all(done for done, _ in state.values()), f"not materialized without a person acting: {state}"
    assert state["marts/agent_daily_kpis"][1], "the KPI mart shows none of its dbt tests as checks"
    failed = {k: c for k, (_, checks) in state.items() for c, s in checks.items() if s != "SUCCEEDED"}
    # Known defect, open in issue 12: on make run's live data the marts' grain tests find duplicate
    # rows (a decision or a KPI day counted twice). Exactly these two are allowed to fail, as an
    # expected failure; any other check that does not pass fails the test.
    known = {"marts/agent_daily_kpis": "unique_combination_agent_daily_kpis_run_day__agent_id__agent_version",
             "marts/eval_decisions_base": "unique_eval_decisions_base_decision_id"}
    if failed and all(known.get(k) == c for k, c in failed.items()):
        pytest.xfail(f"known duplicate rows in the marts on live data (issue 12): {failed}")
    assert not failed, f"checks that did not pass: {failed}"


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
