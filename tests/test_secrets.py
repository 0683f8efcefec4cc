"""No secret in the UI: the webserver on a real instance never shows the catalog URI's password or the AWS keys.

The deployment is an S3 one (the moto server on loopback) whose catalog URI and AWS secret key
and session token carry canaries. The webserver loads the project's workspace; a real ingest run
goes through it. Neither canary may appear in any GraphQL answer about resources or the run (its
logs, materializations, errors), in the webserver's output, in any file under AGENTLAKE_HOME
(Dagster's storage and run logs included) or in any object written to the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from agentlake.config import Settings
from agentlake.log.writer import LogWriter
from agentlake.tables.lake import Lake
from tests.conftest import free_port
from tests.corpus import demo_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "CANARYPW" + uuid.uuid4().hex[:8]  # the catalog URI's secret
AWS_SECRET = "CANARYAWS" + uuid.uuid4().hex[:8]
AWS_TOKEN = "CANARYTOKEN" + uuid.uuid4().hex[:8]
CANARIES = (PASSWORD, AWS_SECRET, AWS_TOKEN)

RESOURCES_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            repositories {
              name
              allTopLevelResourceDetails {
                name
                description
                resourceType
                configFields { name description isRequired defaultValueAsJson }
                configuredValues { key value type }
                nestedResources { name type resource { name configuredValues { key value type } } }
              }
            }
          }
          ... on PythonError { message stack }
        }
      }
    }
  }
}
"""

LAUNCH_MUTATION = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""

RUN_QUERY = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status runConfigYaml tags { key value } }
  }
  logsForRun(runId: $runId, limit: 10000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ErrorEvent { error { message stack } }
        ... on MaterializationEvent {
          assetKey { path }
          metadataEntries {
            label
            description
            ... on TextMetadataEntry { text }
            ... on JsonMetadataEntry { jsonString }
            ... on UrlMetadataEntry { url }
            ... on PathMetadataEntry { path }
            ... on MarkdownMetadataEntry { mdStr }
            ... on IntMetadataEntry { intRepr }
          }
        }
      }
    }
  }
}
"""


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The answer, parsed and as the text it came as (what a browser would receive)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL refused the query: {exc.read().decode()[:2000]}") from None
    answer = json.loads(text)
    assert "errors" not in answer, answer["errors"]
    return answer["data"], text


def assert_no_canary(where: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"a secret ({canary[:6]}...) leaked into {where}"


@pytest.fixture
def deployment(tmp_path: Path, s3_endpoint: str) -> dict[str, str]:
    """An S3 deployment on the loopback server whose secrets are canaries, with one segment in its log."""
    bucket = f"secrets-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="agentlake-test", aws_secret_access_key=AWS_SECRET,
                 aws_session_token=AWS_TOKEN, region_name="us-east-1").create_bucket(Bucket=bucket)
    home = tmp_path / "home"
    (tmp_path / "catalog").mkdir()
    # A SQLite URI can carry no password: the canary rides in a query parameter SQLite ignores.
    catalog = f"sqlite:///file:{tmp_path / 'catalog' / 'catalog.db'}?mode=rwc&password={PASSWORD}&uri=true"
    env = {
        "AGENTLAKE_HOME": str(home), "AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": bucket,
        "AGENTLAKE_S3_PREFIX": "agentlake", "AGENTLAKE_S3_ENDPOINT": s3_endpoint, "AGENTLAKE_CATALOG_URI": catalog,
        "AWS_ACCESS_KEY_ID": "agentlake-test", "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN,
        "AWS_REGION": "us-east-1",
    }
    settings = Settings.from_env(env)
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True)
    instance = {
        "storage": {"sqlite": {"base_dir": str(dagster_home / "storage")}},
        # Launched at once, without a daemon: the webserver alone runs this test's one run.
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"},
        "telemetry": {"enabled": False},
    }
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    writer = LogWriter(Lake(settings).store, "secrets", background_flush=False)
    for line in demo_lines(7, 3, datetime.now(UTC)):
        writer.append_line(line)
    segment = writer.flush()
    assert segment is not None
    return {**env, "DAGSTER_HOME": str(dagster_home), "SEGMENT": segment.key, "DAY": segment.dt}


@pytest.fixture
def webserver(deployment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """dagster-webserver on the project's workspace and a free loopback port; SIGKILLed at the end."""
    port = free_port()
    env = {**os.environ, **{k: v for k, v in deployment.items() if k not in ("SEGMENT", "DAY")}}
    binary = Path(sys.executable).with_name("dagster-webserver")
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(binary), "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_reset_signals, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the webserver did not answer within 60 s"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def test_no_secret_reaches_the_ui_the_run_logs_or_any_file(
    webserver: str, deployment: dict[str, str], tmp_path: Path
) -> None:
    # The resources' configuration, as the UI's resource pages ask for it.
    data, text = graphql(webserver, RESOURCES_QUERY)
    assert_no_canary("the resources' GraphQL answer", text)
    (entry,) = data["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    assert entry["name"] == "agentlake" and location["__typename"] == "RepositoryLocation", location
    resources = {r["name"]: r for repo in location["repositories"] for r in repo["allTopLevelResourceDetails"]}
    configured = {v["key"]: v for v in resources["lake"]["configuredValues"]}
    # The secret-bearing fields are there, by the name of their variable.
    assert configured["catalog_uri"]["type"] == "ENV_VAR" and configured["catalog_uri"]["value"] == "AGENTLAKE_CATALOG_URI"
    assert json.loads(configured["s3_bucket"]["value"]) == deployment["AGENTLAKE_S3_BUCKET"]

    # A real ingest run, launched through the webserver: it reads the bucket and commits to the catalog.
    params = {
        "selector": {"repositoryLocationName": "agentlake", "repositoryName": location["repositories"][0]["name"],
                     "jobName": "ingest"},
        "runConfigData": {"ops": {"ingest_log": {"config": {"segments": [deployment["SEGMENT"]]}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": deployment["DAY"]}]},
    }
    data, text = graphql(webserver, LAUNCH_MUTATION, {"params": params})
    assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
    assert_no_canary("the launch's answer", text)
    run_id = data["launchRun"]["run"]["runId"]
    deadline = time.monotonic() + 60
    while True:
        data, text = graphql(webserver, RUN_QUERY, {"runId": run_id})
        status = data["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.monotonic() < deadline, f"the ingest run is still {status} after 60 s"
        time.sleep(0.5)
    assert_no_canary("the run's GraphQL answer (config, logs, metadata, errors)", text)
    events = data["logsForRun"]["events"]
    failures = [e for e in events if e.get("error")]
    assert status == "SUCCESS", failures
    materialized = [e for e in events if e["__typename"] == "MaterializationEvent"]
    assert any(e["assetKey"]["path"] == ["raw", "events"] and e["metadataEntries"] for e in materialized)

    # Every file under AGENTLAKE_HOME: Dagster's storage (runs, event logs), run logs, anything else.
    home = Path(deployment["AGENTLAKE_HOME"])
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # Dagster's SQLite storage is among them
    for path in [*files, tmp_path / "webserver.log"]:
        assert_no_canary(str(path), path.read_bytes().decode("utf-8", "replace"))

    # And every object the deployment wrote to the bucket (log, warehouse, artifacts).
    s3 = boto3.client("s3", endpoint_url=deployment["AGENTLAKE_S3_ENDPOINT"], aws_access_key_id="agentlake-test",
                      aws_secret_access_key="other", region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=deployment["AGENTLAKE_S3_BUCKET"]).get("Contents", [])]
    assert any("warehouse" in key for key in keys)
    for key in keys:
        body = s3.get_object(Bucket=deployment["AGENTLAKE_S3_BUCKET"], Key=key)["Body"].read()
        assert_no_canary(f"s3 object {key}", body.decode("utf-8", "replace"))


@pytest.mark.parametrize("secret", ["it's-a-secret", "x'); DROP SECRET agentlake_s3; --", "''"])
def test_a_secret_with_quotes_reaches_duckdb_intact_and_unparsed(tmp_path: Path, secret: str) -> None:
    import duckdb
    import duckdb_extensions

    from agentlake.config import S3Settings
    from agentlake.context.query import _s3_secret

    s3 = S3Settings(bucket="lake", endpoint="http://127.0.0.1:9", access_key_id="key-'id", secret_access_key=secret,
                    session_token="to'ken")
    # Only a connection opened to show secrets can read one back; AgentLake's own never are.
    con = duckdb.connect(config={"allow_unredacted_secrets": True})
    duckdb_extensions.import_extension("httpfs", con=con)
    _s3_secret(con, Lake(Settings(home=tmp_path / "home", store="s3", s3=s3)))
    (row,) = con.execute("SELECT name, secret_string FROM duckdb_secrets(redact => false)").fetchall()
    assert row[0] == "agentlake_s3"
    shown = row[1] + ";"
    assert f";secret={secret};" in shown and ";key_id=key-'id;" in shown and ";session_token=to'ken;" in shown
