"""Replay: re-execute a context artifact's request and say whether it still returns the same records.

At the pinned snapshots a replay is **reproducible** (same records hash) or it **differs**
(rows added, removed or changed, per part and table, with their keys); with ``at_current`` it
runs against today's snapshots to show what would change. A pinned snapshot that expired from
its table is read through the metadata file its pin record names. It is **unreplayable** when a
pinned snapshot is gone (never pinned, or its pin ran out and its files were deleted), and **tampered** when a file of the artifact no longer hashes to what was
recorded (the file is named). A replay always reports; it never fails bare.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table

from agentlake.context.assembly import (
    ARTIFACT_PREFIX,
    ArtifactTampered,
    ContextEngine,
    ContextError,
    artifact_keys,
    combined_hash,
    load_artifact,
    read_live_parts,
    records_hash,
    row_digests,
)
from agentlake.context.query import Pins, SnapshotGone, snapshot_location
from agentlake.storage.signing import record_problem
from agentlake.tables.external import LiveSourceUnavailable
from agentlake.tables.files import one_of
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS
from agentlake.tables.verify import verify_files

MAX_KEYS_LISTED = 50

REPRODUCIBLE = "reproducible"
DIFFERS = "differs"
UNREPLAYABLE = "unreplayable"
TAMPERED = "tampered"
SOURCE_CHANGED = "source changed"  # a live part: its source no longer returns the captured records
SOURCE_UNAVAILABLE = "source unavailable"  # a live part: its source could not be read


@dataclass
class PartDiff:
    """How one part of the result changed: counts, and (up to 50 of each) the keys of the rows."""

    part: str
    tables: list[str]
    keys: list[str]
    rows_then: int
    rows_now: int
    added: int = 0
    removed: int = 0
    changed: int = 0
    added_keys: list[Any] = field(default_factory=list)
    removed_keys: list[Any] = field(default_factory=list)
    changed_keys: list[Any] = field(default_factory=list)
    # For each changed key listed: the fields that changed, {field: [then, now]}.
    changed_fields: list[dict[str, Any]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass
class LivePartReport:
    """A live part on replay: whether its source still returns the records the artifact captured."""

    part: str
    source: str
    table: str
    fingerprint: str
    status: str
    diff: PartDiff | None = None
    problem: str | None = None


@dataclass
class ReplayReport:
    """The outcome of replaying one artifact."""

    artifact_key: str
    artifact_uri: str
    run_id: str
    status: str
    at_current: bool
    pins: dict[str, int | None]
    pins_replayed: dict[str, int | None]
    expected_hash: str
    actual_hash: str | None = None
    record_count: int = 0
    diffs: list[PartDiff] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Whether a context_assembled event of the run in raw.events names this manifest (None: not checked).
    log_verified: bool | None = None
    # Live parts are not pinned: each says whether its source still returns what was captured.
    live: list[LivePartReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == REPRODUCIBLE or (self.at_current and self.status == DIFFERS)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        where = "current snapshots" if self.at_current else "pinned snapshots"
        pins = ", ".join(f"{t}@{s}" for t, s in sorted(self.pins_replayed.items()))
        head = f"{self.artifact_uri} (run {self.run_id}): {self.status.upper()} at {where} [{pins}]"
        lines = [head]
        if self.status == REPRODUCIBLE:
            lines.append(f"  {self.record_count} records, hash {self.expected_hash[:16]}… as recorded")
        for problem in self.problems:
            lines.append(f"  {problem}")
        for diff in self.diffs:
            lines += _diff_lines(diff)
        for live in self.live:
            lines.append(f"  live part {live.part} ({live.source}.{live.table}, query {live.fingerprint[:16]}…): "
                         f"{live.status.upper()}")
            lines += [f"    {live.problem}"] if live.problem else []
            lines += _diff_lines(live.diff, indent="    ") if live.diff is not None else []
        changed_pins = [f"{t} {self.pins.get(t)} -> {s}" for t, s in sorted(self.pins_replayed.items())
                        if self.pins.get(t) != s]
        if changed_pins and self.at_current:
            lines.append(f"  snapshots since the artifact: {'; '.join(changed_pins)}")
        return "\n".join(lines)


def _diff_lines(diff: PartDiff, indent: str = "  ") -> list[str]:
    if diff.same:
        return []
    lines = [f"{indent}{diff.part} ({', '.join(diff.tables)}): +{diff.added} added, -{diff.removed} removed, "
             f"~{diff.changed} changed (rows {diff.rows_then} -> {diff.rows_now}; key {', '.join(diff.keys)})"]
    for label, keys in (("added", diff.added_keys), ("removed", diff.removed_keys), ("changed", diff.changed_keys)):
        if keys:
            lines.append(f"{indent}  {label}: {', '.join(str(k) for k in keys)}")
    for change in diff.changed_fields:
        fields = "; ".join(f"{name} {then} -> {now}" for name, (then, now) in change["fields"].items())
        lines.append(f"{indent}    {change['key']}: {fields}")
    return lines


def replay(lake: Lake, ref: str, *, at_current: bool = False, engine: ContextEngine | None = None) -> list[ReplayReport]:
    """Replay every artifact ``ref`` names (an artifact's URI or key, or a run id).

    A run's artifacts are reached through mutable pointers, so none is taken on their word: a
    manifest that names another run, or that no ``context_assembled`` event of its run names in
    ``raw.events``, is reported as tampered.

    Raises:
        ArtifactNotFound: ``ref`` names no artifact.
    """
    owned = engine is None
    engine = engine or ContextEngine(lake)
    by_run = ARTIFACT_PREFIX + "/dt=" not in ref
    try:
        reports = [replay_artifact(lake, key, at_current=at_current, engine=engine)
                   for key in artifact_keys(lake.store, ref)]
    finally:
        if owned:
            engine.close()
    for report in reports:
        if report.run_id == "?":
            continue  # the manifest itself did not load: already tampered
        if by_run and report.run_id != ref:
            report.status = TAMPERED
            report.problems.append(f"the pointer of run {ref!r} leads to the manifest of run {report.run_id!r}: "
                                   "a pointer was redirected")
        _check_against_log(lake, report)
    return reports


def _check_against_log(lake: Lake, report: ReplayReport) -> None:
    """Hold the manifest against the ``context_assembled`` events its run wrote to the log."""
    try:
        events = lake.table(EVENTS.name).scan(
            row_filter=And(one_of("run_id", [report.run_id]), one_of("type", ["context_assembled"])),
            selected_fields=("attributes",),
        ).to_arrow()
    except NoSuchTableError:
        events = None
    named = set()
    for attributes in (events.column("attributes").to_pylist() if events is not None else []):
        try:
            named.add(orjson.loads(attributes or "{}").get("artifact_key"))
        except orjson.JSONDecodeError:
            continue
    if not named:
        report.log_verified = False  # not ingested yet: nothing in the lake to hold it against
        return
    report.log_verified = report.artifact_key in named
    if not report.log_verified:
        report.status = TAMPERED
        report.problems.append(f"no context_assembled event of run {report.run_id!r} in raw.events names this "
                               f"manifest (the log names {', '.join(sorted(str(k) for k in named))})")


def replay_artifact(lake: Lake, key: str, *, at_current: bool = False, engine: ContextEngine) -> ReplayReport:
    """Replay one artifact by its manifest key.

    Raises:
        ArtifactNotFound: no manifest at ``key``.
    """
    started = time.perf_counter()
    try:
        artifact = load_artifact(lake.store, key)
    except ArtifactTampered as exc:
        return ReplayReport(key, lake.store.uri(key), "?", TAMPERED, at_current, {}, {}, exc.expected,
                            problems=[str(exc)], seconds=time.perf_counter() - started)
    manifest = artifact.manifest
    forged = record_problem(lake.settings, manifest)
    if forged is not None:
        artifact.problems.append(f"the manifest {key} is not AgentLake's: {forged}")
    report = ReplayReport(
        artifact_key=key, artifact_uri=artifact.ref.uri, run_id=manifest["run_id"], status=REPRODUCIBLE,
        at_current=at_current, pins=artifact.pins, pins_replayed={}, expected_hash=manifest["records_hash"],
        problems=list(artifact.problems),
    )
    try:
        request = artifact.request
        tables = engine.tables(list(artifact.pins))
    except (ContextError, NoSuchTableError) as exc:
        report.status = UNREPLAYABLE
        report.problems.append(f"the request can no longer be resolved: {exc}")
        report.seconds = time.perf_counter() - started
        return report
    if at_current:
        pins: Pins = {name: None for name in artifact.pins}  # a table gone since reads as empty
        for name, table in tables.items():
            snapshot = table.current_snapshot()
            pins[name] = snapshot.snapshot_id if snapshot else None
    else:
        pins = dict(artifact.pins)
    report.pins_replayed = pins
    try:
        # A pinned snapshot expired from its table is read through the metadata file its pin names.
        records, _plans = engine.run(request, pins, tables, plan=False)
    except SnapshotGone as exc:
        report.status = UNREPLAYABLE
        report.problems.append(f"{exc}; the artifact's records are still readable, but the query can no longer be "
                               "re-executed at that snapshot")
        report.seconds = time.perf_counter() - started
        return report
    except ContextError as exc:
        report.status = UNREPLAYABLE
        report.problems.append(f"the request no longer runs: {exc}")
        if not at_current:
            _check_pinned_files(lake, tables, pins, report)
        report.seconds = time.perf_counter() - started
        return report
    hashes = {name: records_hash(table) for name, table in records.items()}
    # A live part counts as captured: the pinned parts alone decide reproducible; the live ones report apart.
    live = _replay_live(lake, request, artifact, report)
    hashes.update({name: manifest["parts"][name]["records_hash"] for name in live})
    report.actual_hash = combined_hash(hashes)
    report.record_count = sum(t.num_rows for t in records.values())
    for name, table in records.items():
        part = manifest["parts"].get(name, {})
        then = artifact.records.get(name)
        tables_of = _tables_of(request, name, list(pins))
        if then is None:
            continue  # altered or missing file: already a problem; nothing to compare against
        report.diffs.append(_diff(name, tables_of, part.get("keys") or list(table.column_names), then, table))
    if artifact.problems:
        report.status = TAMPERED
        if report.actual_hash == report.expected_hash:
            report.problems.append("re-executed at the pinned snapshots, the request still gives the recorded "
                                   "records hash: the tables are intact, the artifact's file is not")
    elif report.actual_hash != report.expected_hash:
        report.status = DIFFERS
        if not at_current:  # a pinned snapshot's data never changes: a different answer means its files did
            _check_pinned_files(lake, tables, pins, report, differs=True)
    report.seconds = time.perf_counter() - started
    return report


def _replay_live(lake: Lake, request: Any, artifact: Any, report: ReplayReport) -> list[str]:
    """Ask each live part's source again; returns the live parts' names."""
    manifest, captured = artifact.manifest, artifact.records
    queries = request.live_queries()
    try:
        now = read_live_parts(lake, request) if queries else {}
        problem = None
    except LiveSourceUnavailable as exc:
        now, problem = {}, str(exc)
    for name, query in queries.items():
        recorded = manifest["parts"].get(name, {}).get("live", {})
        part = LivePartReport(name, query.source, query.table, query.fingerprint, REPRODUCIBLE)
        report.live.append(part)
        if recorded.get("fingerprint") != query.fingerprint:
            problem_text = (f"live part {name!r}: the request compiles to a query whose fingerprint is not the "
                            "recorded one: the manifest was altered")
            artifact.problems.append(problem_text)
            report.problems.append(problem_text)
        then = captured.get(name)
        if problem is not None or then is None:
            part.status, part.problem = SOURCE_UNAVAILABLE, problem or "its captured records are unreadable"
            continue
        part.diff = _diff(name, [f"{query.source}.{query.table}"], manifest["parts"][name].get("keys") or [],
                          then, now[name])
        if records_hash(now[name]) != manifest["parts"][name]["records_hash"]:
            part.status = SOURCE_CHANGED
    return list(queries)


def _check_pinned_files(lake: Lake, tables: dict[str, Table], pins: Pins, report: ReplayReport, *,
                        differs: bool = False) -> None:
    """Read the data files of the pinned snapshots; a file that is not what its manifest says means tampering."""
    found: list[str] = []
    for name, snapshot_id in pins.items():
        if snapshot_id is None:
            continue
        table = tables[name]
        snapshot = table.metadata.snapshot_by_id(snapshot_id)
        if snapshot is None:
            try:
                location = snapshot_location(lake, table, name, snapshot_id)
            except SnapshotGone:
                continue  # already reported as gone
            snapshot = FromInputFile.table_metadata(table.io.new_input(location)).snapshot_by_id(snapshot_id)
        if snapshot is not None:
            found += [f"{name} snapshot {snapshot_id}: {problem}" for problem in verify_files(table, snapshot).problems]
    if found:
        report.status = TAMPERED
        report.problems += [f"data file changed under a pinned snapshot: {problem}" for problem in found]
    elif differs:
        report.status = TAMPERED
        report.problems.append("the records differ at the pinned snapshots, though every data file has the size and "
                               "row count its manifest recorded: a file's content was changed in place")


def _tables_of(request: Any, part: str, default: list[str]) -> list[str]:
    if request.sql is not None:
        return sorted(default)
    return [s.table for s in request.sources if s.part == part]


def _diff(part: str, tables: list[str], keys: list[str], then: pa.Table, now: pa.Table) -> PartDiff:
    diff = PartDiff(part=part, tables=tables, keys=keys, rows_then=then.num_rows, rows_now=now.num_rows)
    if not all(k in then.column_names and k in now.column_names for k in keys):
        keys = diff.keys = [c for c in then.column_names if c in now.column_names]
    old, new = _keyed(then, keys), _keyed(now, keys)
    if old is None or new is None:  # keys not unique: compare whole rows
        diff.keys = ["<whole row>"]
        old_rows, new_rows = _multiset(then), _multiset(now)
        diff.added = sum((new_rows - old_rows).values())
        diff.removed = sum((old_rows - new_rows).values())
        return diff
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    changed = [k for k in new if k in old and new[k] != old[k]]
    diff.added, diff.removed, diff.changed = len(added), len(removed), len(changed)
    diff.added_keys = [_key_json(k) for k in sorted(added, key=str)[:MAX_KEYS_LISTED]]
    diff.removed_keys = [_key_json(k) for k in sorted(removed, key=str)[:MAX_KEYS_LISTED]]
    diff.changed_keys = [_key_json(k) for k in sorted(changed, key=str)[:MAX_KEYS_LISTED]]
    diff.changed_fields = _field_changes(then, now, keys, sorted(changed, key=str)[:MAX_KEYS_LISTED])
    return diff


def _field_changes(then: pa.Table, now: pa.Table, keys: list[str], changed: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Per changed key, the fields whose values differ: {field: [then, now]}."""
    wanted = set(changed)

    def by_key(table: pa.Table) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {k: row for row in table.to_pylist() if (k := tuple(row[c] for c in keys)) in wanted}

    old, new = by_key(then), by_key(now)
    return [{"key": _key_json(k), "fields": {c: [_plain(old[k][c]), _plain(v)] for c, v in new[k].items()
                                             if c in old[k] and old[k][c] != v}}
            for k in changed]


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float) or value is None else str(value)


def _keyed(table: pa.Table, keys: list[str]) -> dict[tuple[Any, ...], bytes] | None:
    key_columns = [table.column(k).to_pylist() for k in keys]
    out: dict[tuple[Any, ...], bytes] = {}
    for key, digest in zip(zip(*key_columns, strict=True), row_digests(table), strict=True):
        if key in out:
            return None
        out[key] = digest
    return out


def _multiset(table: pa.Table) -> Any:
    from collections import Counter

    return Counter(row_digests(table))


def _key_json(key: tuple[Any, ...]) -> Any:
    values = [v if isinstance(v, str | int | float) or v is None else str(v) for v in key]
    return values[0] if len(values) == 1 else values
