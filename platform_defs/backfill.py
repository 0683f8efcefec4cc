"""Launch a partition backfill on the running platform, through its webserver's GraphQL API.

``agentlake backfill`` calls :func:`launch_backfill`: it looks the assets up (each must exist and
be partitioned by arrival day), checks that the days asked for are partitions of them, and calls
``launchPartitionBackfill`` with the assets and the days, tagged with the backfill lane's priority
(Dagster copies a backfill's tags to each of its runs, and tags them ``dagster/backfill``, which
the run queue and the run launcher put in the backfill lane). Dagster's Python GraphQL client has
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

    def as_dict(self) -> dict[str, Any]:
        return {"backfill_id": self.backfill_id, "url": self.url, "assets": self.assets,
                "partitions": self.partitions}


_ASSET = """query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  __typename ... on AssetNode { isPartitioned partitionKeys } } }"""
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
    backfill_lane = lane("backfill")
    params = {
        "assetSelection": [{"path": asset.split("/")} for asset in assets],
        "partitionNames": days,
        "tags": [{"key": key, "value": value} for key, value in backfill_lane.tags().items()],
    }
    result = graphql(ui_url, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillRefused(f"the platform refused the backfill of {', '.join(assets)} "
                              f"({result['__typename']}: {str(result.get('message', '')).splitlines()[0:1]}); "
                              "see the webserver's log")
    backfill_id = str(result["backfillId"])
    return LaunchedBackfill(backfill_id, f"{ui_url.rstrip('/')}/overview/backfills/{backfill_id}", assets, days)
