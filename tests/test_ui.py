"""End to end: `make run`'s stack in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        # An external source's lineage: ext/tickets is loaded by dlt from the helpdesk and read by the context.
        page.goto(f"{url}/assets/ext/tickets?view=lineage&lineageScope=neighbors", wait_until="domcontentloaded")
        for name in ("helpdesk", "tickets", "context_artifacts"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "ext-tickets-lineage.png"))
        page.goto(f"{url}/assets/ext/tickets", wait_until="domcontentloaded")
        page.get_by_text("dlt", exact=True).first.wait_for(timeout=60_000)
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


def _audited_runs(url: str) -> list[str]:
    """The runs whose audit pages the latest materialization of ``context_artifacts`` links, in its order."""
    query = """query { assetNodeOrError(assetKey: {path: ["context_artifacts"]}) { ... on AssetNode {
      assetMaterializations(limit: 1) { metadataEntries { label ... on UrlMetadataEntry { url } } } } } }"""
    node = _graphql(url, query, {})["assetNodeOrError"]
    return [str(entry["url"]).rsplit("/audit/", 1)[1] for event in node.get("assetMaterializations") or []
            for entry in event["metadataEntries"] if entry["label"].startswith("audit ") and entry.get("url")]


def _walkable(home: Path, audit_port: str, run_ids: list[str]) -> tuple[str, Any] | None:
    """The first of these runs whose decision is ingested and whose context's records trace to the log
    (an artifact is indexed as soon as it is written; its run's decision lands a moment later), with its trail."""
    agentlake = [sys.executable, "-m", "agentlake.cli"]
    listed = ", ".join(f"'{r}'" for r in run_ids if re.fullmatch(r"[\w-]+", r))
    if not listed:
        return None
    sql = f"SELECT DISTINCT run_id FROM raw.events WHERE type = 'decision' AND run_id IN ({listed})"
    decided = {row["run_id"] for row in orjson.loads(_cli(home, audit_port, *agentlake, "query", "--json", sql))["rows"]}
    for run_id in (r for r in run_ids if r in decided):
        trail = orjson.loads(_cli(home, audit_port, *agentlake, "audit", "--json", run_id))
        if trail["decision"] and trail["segments"]:
            return run_id, trail
    return None


def test_an_auditor_walks_from_the_asset_catalog_to_a_decision_s_snapshots_checks_and_segments(
    tmp_path: Path, browser_path: str, platform: tuple[str, Path, str], test_output: Path | None
) -> None:
    from playwright.sync_api import TimeoutError as PageTimeout
    from playwright.sync_api import sync_playwright

    url, home, audit_port = platform
    shots = (test_output or tmp_path) / "audit-walk"
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the audit walk: {shots}")
    # Nobody acting: the demo fleet's reading agents assemble their context through the lake, and the
    # evaluation sensor's runs index the day's artifacts. Wait until a decision linked there is ingested and
    # read records that go back to the log (its past decisions): a fresh platform's first contexts are empty.
    deadline, found = time.monotonic() + 300, None
    while found is None and time.monotonic() < deadline:
        found = _walkable(home, audit_port, _audited_runs(url))
        if found is None:
            time.sleep(5)
    assert found, "context_artifacts did not link an ingested decision that read the log within 5 minutes"

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
        # The newest materialization, as the page shows it now (the sensors index a live fleet): the decision
        # audited is the first it links whose run is ingested and read the log.
        links = page.locator('a[href*="/audit/"]').locator("visible=true")
        # Maintenance records no observation on the index's page (its figures are on maintenance/fact_tables):
        # the newest event, which the Events tab selects, is a materialization of the index.
        for attempt in range(3):  # on a loaded machine the page's first answer can take minutes: look again
            try:
                links.first.wait_for(timeout=60_000)
                break
            except PageTimeout:
                page.screenshot(path=str(shots / f"2-still-loading-{attempt}.png"), full_page=True)
                if attempt == 2:
                    raise
                page.reload(wait_until="domcontentloaded")
        page.screenshot(path=str(shots / "2-latest-materialization.png"), full_page=True)
        hrefs = [str(h) for h in links.evaluate_all("(els) => els.map((e) => e.getAttribute('href'))")]
        found = _walkable(home, audit_port, [h.rsplit("/audit/", 1)[1] for h in hrefs])
        assert found, f"none of the decisions linked is ingested with a context that read the log: {hrefs}"
        run_id, trail = found
        link = page.locator(f'a[href$="/audit/{run_id}"]').locator("visible=true").first
        try:
            with page.context.expect_page(timeout=10_000) as opened:
                link.click()  # 3: the decision's audit page
            walk = opened.value
        except PageTimeout:  # the link opened in the same tab
            walk = page
        walk.get_by_text("Pinned snapshots").wait_for(timeout=120_000)
        walk.screenshot(path=str(shots / "3-audit-page.png"), full_page=True)
        text = walk.locator("body").inner_text()
        assert trail["decision"] and trail["artifact"]["key"] in text and "reproducible" in text
        assert trail["pins"], "the audited artifact pins no table"
        for pin in trail["pins"]:
            assert str(pin["snapshot_id"]) in text
            if pin["dagster_run_id"]:
                assert walk.locator(f'a[href="{url}/runs/{pin["dagster_run_id"]}"]').count() >= 1
            # Its check results, or why it has none (facts are committed after raw.events' gate passed).
            assert pin["checks"] or (pin["checks_note"] and pin["checks_note"] in text), pin
            for check in pin["checks"]:
                assert f"{check['kind']} {check['key']}: {'passed' if check['success'] else 'FAILED'}" in text
        assert any(p["dagster_run_id"] for p in trail["pins"]), "no pinned snapshot names the run that committed it"
        assert trail["segments"] and all(s["key"] in text for s in trail["segments"])
        assert all(s["checksum_ok"] for s in trail["segments"])
        assert "TAMPERED" not in text
        browser.close()


_ASSET_STATE = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetMaterializations(limit: 1) { runId partition }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } } }"""
_CHECK_RUNS = """query ($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) { runId status } }"""
# A check's evaluation that has ended with a verdict; IN_PROGRESS (a sensor's run under way) and
# SKIPPED (a run that did not select the check) say nothing about the data yet.
_SETTLED = ("SUCCEEDED", "FAILED", "EXECUTION_FAILED")


def _graphql(url: str, query: str, variables: dict[str, Any]) -> Any:
    import urllib.request

    body = orjson.dumps({"query": query, "variables": variables})
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return orjson.loads(resp.read())["data"]


def _assert_marts_and_evaluation_materialized_with_passing_checks(url: str) -> None:
    """Nobody acting: the dbt marts and every eval asset were materialized by the sensors' runs, and the
    latest evaluation of each of their asset checks that has ended passed (read through the UI's GraphQL)."""
    keys = [["marts", "agent_daily_kpis"], ["marts", "eval_decisions_base"],
            ["eval", "decisions"], ["eval", "daily"], ["eval", "comparisons"]]
    deadline, state = time.monotonic() + 300, {}
    while time.monotonic() < deadline:
        for key in keys:
            node = _graphql(url, _ASSET_STATE, {"key": {"path": key}})["assetNodeOrError"]
            checks = {}
            for check in node["assetChecksOrError"]["checks"]:
                runs = _graphql(url, _CHECK_RUNS, {"key": {"path": key}, "name": check["name"]})
                ended = [r["status"] for r in runs["assetCheckExecutions"] if r["status"] in _SETTLED]
                checks[check["name"]] = ended[0] if ended else None  # newest first
            state["/".join(key)] = (bool(node["assetMaterializations"]), checks)
        if all(done and all(checks.values()) for done, checks in state.values()):
            break
        time.sleep(5)
    assert all(done for done, _ in state.values()), f"not materialized without a person acting: {state}"
    assert state["marts/agent_daily_kpis"][1], "the KPI mart shows none of its dbt tests as checks"
    not_passed = {f"{k}:{c}": s for k, (_, checks) in state.items() for c, s in checks.items() if s != "SUCCEEDED"}
    assert not not_passed, f"checks whose latest ended evaluation did not pass (None: none ended): {not_passed}"


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
    support = []
    for row in reading:
        key = orjson.loads(row["attributes"]).get("context_artifact")
        assert key, f"decision of run {row['run_id']} names no context artifact"
        artifact = load_artifact(lake.store, key)
        assert artifact.manifest["run_id"] == row["run_id"]
        if row["agent_id"] == "support-triage":
            support.append(artifact)
    # `make run` keeps a demo helpdesk: support runs read their customer's open tickets from it live.
    assert support, "no support-triage decision was ingested"
    assert all("live" in a.manifest["parts"].get("tickets_now", {}) for a in support), \
        "a support run of make run's fleet did not read the helpdesk live"
