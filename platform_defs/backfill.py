"""Launch a partition backfill on the running platform, through its webserver's GraphQL API.

``agentlake backfill`` calls :func:`launch_backfill`: it looks the assets up (each must exist and
be partitioned by arrival day), checks that the days asked for are partitions of them, and calls
``launchPartitionBackfill`` with the days, tagged with the backfill lane's priority (Dagster copies
a backfill's tags to each of its runs, and tags them ``dagster/backfill``, which the run queue and
the run launcher put in the backfill lane).

When the assets asked for are the work of one of the platform's jobs (``ingest``: the raw tables;
``facts``: the fact tables), the backfill is that job's: its runs do the job's own work with its own
checks. An asset backfill's runs would also run every check other definitions place on those
assets: dbt's source tests, which run the marts' dbt step against today's tables in every run of
the backfill (waiting on the marts' DuckDB file), and the freshness checks. Other selections are
asset backfills, as the UI launches them. Dagster's Python GraphQL client has
no backfill call, so this module speaks plain HTTP and imports no Dagster: the command line
stays quick and the core free of the orchestrator.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from agentlake.errors import AgentLakeError, TerminalError, TransientError
from platform_defs.lanes import lane


class BackfillRefused(TerminalError, AgentLakeError):
    """The backfill asked for cannot be launched as it is (an unknown asset, days it does not have)."""


class WebserverUnreachable(TransientError, AgentLakeError):
    """The platform's webserver did not answer: start it (`make run`) or point AGENTLAKE_UI_URL at it."""


@dataclass(frozen=True)
class LaunchedBackfill:
    """A backfill the platform accepted: its id, its page in the UI and what it covers."""

    backfill_id: str
    url: str
    assets: list[str]
    partitions: list[str]
    job: str | None = None  # the platform's job whose work the backfill is; None: an asset backfill

    def as_dict(self) -> dict[str, Any]:
        return {"backfill_id": self.backfill_id, "url": self.url, "assets": self.assets,
                "partitions": self.partitions, "job": self.job}


_ASSET = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  __typename ... on AssetNode { isPartitioned partitionKeys jobNames opNames
  repository { name location { name } } } } }"""
_JOB_ASSETS = """query ($job: PipelineSelector!) { assetNodes(pipeline: $job) { assetKey { path } opNames } }"""
_LAUNCH = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""


def graphql(ui_url: str, query: str, variables: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One GraphQL call to the webserver at ``ui_url``; its ``data``.

    Raises:
        WebserverUnreachable: nothing answered at ``ui_url``, or it did not answer as Dagster's webserver.
    """
    request = urllib.request.Request(ui_url.rstrip("/") + "/graphql",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # it answered, with an error: say what it said
        text = exc.read().decode("utf-8", "replace")
        try:
            answer = json.loads(text)
            # A GraphQL error, or a resolver's PythonError that the server answers with a 500.
            errors = answer.get("errors") or [v for v in (answer.get("data") or {}).values() if isinstance(v, dict)]
            text = errors[0]["message"]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        first = next((line.strip() for line in str(text).splitlines() if line.strip()), str(exc.code))
        raise BackfillRefused(f"the webserver at {ui_url} answered HTTP {exc.code}: {first[:300]}; see its log "
                              "(AGENTLAKE_HOME/logs/dagster.log)") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WebserverUnreachable(
            f"the platform's webserver at {ui_url} did not answer ({reason}); start it with `make run`, or set "
            "AGENTLAKE_UI_URL to its address"
        ) from None
    if body.get("errors") or not isinstance(body.get("data"), dict):
        first = (body.get("errors") or [{}])[0].get("message", "no data")
        raise WebserverUnreachable(f"the webserver at {ui_url} refused the request ({first}); is it AgentLake's "
                                   "Dagster webserver?")
    return dict(body["data"])


def days_between(first: date, last: date) -> list[str]:
    """The arrival days from ``first`` to ``last``, both included."""
    if last < first:
        raise BackfillRefused(f"--from {first} is after --to {last}; give the earlier day first")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def launch_backfill(ui_url: str, assets: list[str], first: date, last: date) -> LaunchedBackfill:
    """Launch a backfill of ``assets`` (keys such as ``raw/events``) for the days ``first`` to ``last``.

    Raises:
        BackfillRefused: an asset is unknown or not partitioned, a day is not one of its partitions,
            or the platform refused the backfill.
        WebserverUnreachable: the webserver did not answer.
    """
    days = days_between(first, last)
    nodes: dict[str, dict[str, Any]] = {}
    for asset in assets:
        node = graphql(ui_url, _ASSET, {"key": {"path": asset.split("/")}})["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise BackfillRefused(f"no asset {asset!r} on the platform at {ui_url}; give a key as the UI shows it, "
                                  "e.g. raw/events or facts/agent_runs")
        if not node["isPartitioned"]:
            raise BackfillRefused(f"asset {asset!r} is not partitioned by day; materialize it from the UI instead")
        known = set(node["partitionKeys"])
        if missing := [day for day in days if day not in known]:
            keys = sorted(known)
            span = f"{keys[0]} to {keys[-1]}" if keys else "none"
            raise BackfillRefused(f"{missing[0]} is not a partition of {asset} (its days: {span}); "
                                  "give days within them")
        nodes[asset] = node
    backfill_lane = lane("backfill")
    params: dict[str, Any] = {
        "partitionNames": days,
        "tags": [{"key": key, "value": value} for key, value in backfill_lane.tags().items()],
    }
    job = _job_doing(ui_url, nodes)
    if job is not None:
        name, repository, location, assets = job
        params["selector"] = {"partitionSetName": f"{name}_partition_set",
                              "repositorySelector": {"repositoryName": repository, "repositoryLocationName": location}}
    else:
        params["assetSelection"] = [{"path": asset.split("/")} for asset in assets]
    result = graphql(ui_url, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillRefused(f"the platform refused the backfill of {', '.join(assets)} "
                              f"({result['__typename']}: {str(result.get('message', '')).splitlines()[0:1]}); "
                              "see the webserver's log")
    backfill_id = str(result["backfillId"])
    return LaunchedBackfill(backfill_id, f"{ui_url.rstrip('/')}/overview/backfills/{backfill_id}", assets, days,
                            job[0] if job else None)


def _job_doing(ui_url: str, nodes: dict[str, dict[str, Any]]) -> tuple[str, str, str, list[str]] | None:
    """The platform's job whose work is exactly these assets' ops, if one is: (its name, repository,
    location, its assets). Its assets may be more than those asked for, but only ones their ops make
    anyway (the ops of the raw and fact tables cannot make a part of their assets)."""
    first = next(iter(nodes.values()))
    repository, location = first["repository"]["name"], first["repository"]["location"]["name"]
    ops = {op for node in nodes.values() for op in node["opNames"]}
    named = set.intersection(*({j for j in node["jobNames"] if not j.startswith("__")} for node in nodes.values()))
    for name in sorted(named):
        selector = {"pipelineName": name, "repositoryName": repository, "repositoryLocationName": location}
        job_assets = graphql(ui_url, _JOB_ASSETS, {"job": selector})["assetNodes"]
        if job_assets and all(set(a["opNames"]) <= ops for a in job_assets):
            return name, repository, location, sorted("/".join(a["assetKey"]["path"]) for a in job_assets)
    return None
