"""The context index: one Iceberg row per context artifact, rebuilt per day of creation, and its checks.

Artifacts live in the object store (``artifacts/v1/dt=<day>/``); the index makes them queryable
by run, agent, pin or hash. A day's rows are replaced in one commit, so indexing a day again
gives the same table content. The checks are plain functions: every artifact of the day is
readable, its files hash to what was recorded, and every snapshot it pins can still be read
(in its table's metadata, or through the metadata file its pin record names).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from agentlake.context.assembly import ARTIFACT_PREFIX, ArtifactTampered, load_artifact
from agentlake.context.query import SnapshotGone, snapshot_location
from agentlake.storage.retry import DEFAULT_POLICY, RetryPolicy, StageRetry
from agentlake.tables.files import write_files
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import TableDef, ensure_tables

CONTEXT_ARTIFACTS = TableDef(
    "context.artifacts",
    (
        ("artifact_key", "string", True, "the manifest's key in the object store (content-addressed)"),
        ("artifact_uri", "string", True, "the manifest's full address"),
        ("run_id", "string", True, "the agent run the context was assembled for"),
        ("agent_id", "string", True, ""),
        ("created_at", "timestamp", True, "when the artifact was made: the partition"),
        ("as_of", "timestamp", False, "the time the request read the tables as of, if not now"),
        ("pins", "json", True, "{table: snapshot_id} the request read"),
        ("record_count", "int", True, ""),
        ("records_hash", "string", True, "sha256 over the records (see agentlake.context.records_hash)"),
        ("request", "json", True, "the declarative request, re-executable by replay"),
        ("platform_version", "string", False, ""),
    ),
    "One row per context artifact: which run read which table snapshots, how many records, their hash.",
    partition_column="created_at",
)


def artifact_manifest_keys(lake: Lake, day: str) -> list[str]:
    """The manifests of the artifacts created on ``day``."""
    return [o.key for o in lake.store.list(f"{ARTIFACT_PREFIX}/dt={day}/") if o.key.endswith(".json")]


@dataclass
class ArtifactCheck:
    """One artifact's checks: readable, hashes verified, pins resolvable."""

    key: str
    readable: bool = True
    hash_verified: bool = True
    pins_resolvable: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class DayIndex:
    """What indexing a day found and did."""

    day: str
    artifacts: int = 0
    records: int = 0
    snapshot_id: int | None = None
    checks: list[ArtifactCheck] = field(default_factory=list)
    seconds: float = 0.0

    def failing(self, check: str) -> list[ArtifactCheck]:
        return [c for c in self.checks if not getattr(c, check)]

    def as_dict(self) -> dict[str, Any]:
        return {"day": self.day, "artifacts": self.artifacts, "records": self.records,
                "snapshot_id": self.snapshot_id, "seconds": round(self.seconds, 3),
                "unreadable": len(self.failing("readable")), "hash_mismatches": len(self.failing("hash_verified")),
                "pins_gone": len(self.failing("pins_resolvable"))}


def index_day(lake: Lake, day: str, *, run_id: str = "context-index",
              retry: RetryPolicy = DEFAULT_POLICY) -> DayIndex:
    """Check every artifact created on ``day`` and replace the day's rows of ``context.artifacts``.

    Raises:
        StageAborted: commits kept conflicting with other writers; run it again.
    """
    started = time.perf_counter()
    report = DayIndex(day)
    rows: list[dict[str, Any]] = []
    for key in artifact_manifest_keys(lake, day):
        check = ArtifactCheck(key)
        report.checks.append(check)
        try:
            artifact = load_artifact(lake.store, key)
        except ArtifactTampered as exc:
            check.readable = check.hash_verified = False
            check.problems.append(str(exc))
            continue
        except (orjson.JSONDecodeError, KeyError) as exc:
            check.readable = False
            check.problems.append(f"manifest {key} cannot be read: {exc}")
            continue
        if artifact.problems:
            check.hash_verified = False
            check.problems += artifact.problems
        manifest = artifact.manifest
        for table_name, snapshot_id in artifact.pins.items():
            if snapshot_id is None:
                continue
            try:
                snapshot_location(lake, lake.table(table_name), table_name, snapshot_id)
            except SnapshotGone as exc:
                check.pins_resolvable = False
                check.problems.append(str(exc))
        rows.append({
            "artifact_key": key, "artifact_uri": artifact.ref.uri, "run_id": manifest["run_id"],
            "agent_id": manifest["agent_id"], "created_at": _time(manifest["created_at"]),
            "as_of": _time(manifest["as_of"]) if manifest.get("as_of") else None,
            "pins": orjson.dumps({k: str(v) for k, v in manifest["pins"].items()}).decode(),
            "record_count": int(manifest["record_count"]), "records_hash": manifest["records_hash"],
            "request": orjson.dumps(manifest["request"]).decode(), "platform_version": manifest.get("platform_version"),
        })
    report.artifacts = len(rows)
    report.records = sum(r["record_count"] for r in rows)
    data = pa.Table.from_pylist(rows, schema=CONTEXT_ARTIFACTS.arrow_schema()) if rows else None
    properties = {"agentlake.run-id": run_id, "agentlake.partition": day, "agentlake.artifacts": str(len(rows))}
    def attempt() -> None:
        table = ensure_tables(lake.catalog, [CONTEXT_ARTIFACTS])[CONTEXT_ARTIFACTS.name]
        files = write_files(table, CONTEXT_ARTIFACTS, [data]) if data is not None else []
        with table.transaction() as tx:
            if table.current_snapshot() is not None:
                tx.delete(_day_filter(day), snapshot_properties=properties)
            if files:
                with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
                    for data_file in files:
                        append.append_data_file(data_file)
        snapshot = table.current_snapshot()
        report.snapshot_id = snapshot.snapshot_id if snapshot else None

    StageRetry(f"indexing the artifacts of {day}", policy=retry).run(attempt)
    report.seconds = time.perf_counter() - started
    return report


def _day_filter(day: str) -> BooleanExpression:
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    return And(
        GreaterThanOrEqual("created_at", start.isoformat()),  # type: ignore[call-arg, arg-type, misc]
        LessThan("created_at", end.isoformat()),  # type: ignore[call-arg, arg-type, misc]
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
