"""The audit walk: from an agent's decision (a run id) back to the data it saw and where that came from.

For one run, :func:`audit` gathers in one read-only pass:

1. the run's events in ``raw.events``, and its ``decision`` event;
2. the context artifact the decision read: the one its ``context_artifact`` attribute names when
   it carries one, else the run's latest artifact, found through the run's pointers as replay by
   run id finds them (every artifact of the run is listed); with the replay verdict;
3. for each table the artifact pinned: the snapshot, when it was committed, the Dagster run that
   committed it (``agentlake.dagster_run_id`` in the snapshot's own summary, so it is read from
   Iceberg, not from Dagster), and the quality-check results kept for that snapshot (the
   write-once validation results of the gate, and any publish audit record of its segments);
   a snapshot that no gate validated (facts are committed once their raw rows passed) says so;
4. the log segments the artifact's records came from, with the line offsets, each read back from
   the log so that its checksum is verified, and each named line checked to hold the record's event;
5. the source load behind a snapshot, when its summary records one (``agentlake.source``,
   ``agentlake.dlt.load-id``, ``agentlake.source.*``).

Nothing is written and nothing is taken on its word: a tampered artifact or segment is reported as
tampered, naming the file, and the walk goes on with the rest.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import zstandard
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from agentlake.context.assembly import (
    ArtifactNotFound,
    ArtifactTampered,
    ContextEngine,
    artifact_keys,
    check_run_id,
    load_artifact,
)
from agentlake.context.index import artifact_manifest_keys
from agentlake.context.query import SnapshotGone, snapshot_location
from agentlake.context.replay import TAMPERED, replay
from agentlake.errors import AgentLakeError, BadSegment, InvalidSegmentKey, ObjectNotFound
from agentlake.gate.publish import AUDIT_RECORDS
from agentlake.gate.validations import data_docs_key, validation_key
from agentlake.log.segments import SegmentInfo, checksum
from agentlake.tables.files import one_of
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, TABLES_BY_NAME

DAGSTER_RUN_PROPERTY = "agentlake.dagster_run_id"
# What a source table's commit says about the load that produced it (agentlake.sources.external writes them):
# the source, the dlt load id, and the source state (``agentlake.source.cursor-before`` and the like).
LOAD_KEYS = ("agentlake.source", "agentlake.dlt.load-id")
LOAD_PREFIX = "agentlake.source."
EVENT_COLUMNS = ("event_id", "type", "ts", "agent_id", "decision_label", "attributes", "segment_key", "line_offset")
MAX_EVENTS = 500


class RunNotFound(ArtifactNotFound):
    """The run id names no event in ``raw.events`` and no context artifact: there is nothing to audit."""


@dataclass
class PinAudit:
    """One table snapshot an artifact pinned, and who committed it, when, and what checked it."""

    table: str
    snapshot_id: int | None
    committed_at: str | None = None
    dagster_run_id: str | None = None
    ingest_run_id: str | None = None
    operation: str | None = None
    partition: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_note: str = ""
    source_load: dict[str, str] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class SegmentAudit:
    """One log segment the artifact's records came from: which lines, and whether it verifies."""

    key: str
    lines: list[int]
    checksum: str = ""
    in_log: bool = False
    checksum_ok: bool = False
    lines_ok: bool = False
    problem: str = ""


@dataclass
class AuditTrail:
    """The chain from one decision to its sources; ``as_dict()`` is the CLI's ``--json``."""

    run_id: str
    decision: dict[str, Any] | None
    events: list[dict[str, Any]]
    artifact: dict[str, Any] | None
    replay: dict[str, Any] | None
    pins: list[PinAudit]
    segments: list[SegmentAudit]
    artifacts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    manifest_tampered: bool = False  # the manifest itself does not hash to its address, or names another run

    @property
    def tampered(self) -> bool:
        """Whether anything on the walk failed its verification (an artifact's file, a segment)."""
        return bool((self.replay or {}).get("status") == TAMPERED
                    or any(not s.checksum_ok or not s.lines_ok for s in self.segments)
                    or self.manifest_tampered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "decision": self.decision, "events": self.events, "artifact": self.artifact,
            "artifacts": self.artifacts, "replay": self.replay, "pins": [asdict(p) for p in self.pins],
            "segments": [asdict(s) for s in self.segments], "tampered": self.tampered, "problems": self.problems,
        }

    def text(self) -> str:
        """The chain as lines for a terminal."""
        out = [f"run {self.run_id}: {len(self.events)} event(s) in raw.events"
               + ("; TAMPERED" if self.tampered else "")]
        if self.decision:
            d = self.decision
            out.append(f"decision {d['event_id']} at {d['ts']}: {d.get('decision_label') or ''}".rstrip())
        else:
            out.append("decision: no decision event of this run in raw.events")
        if self.artifact:
            a = self.artifact
            out.append(f"artifact {a['key']} ({a['found_by']}): {a['record_count']} records, hash {a['records_hash']}")
            out.append(f"  request {orjson.dumps(a['request']).decode()}")
        for other in self.artifacts:
            if not self.artifact or other != self.artifact["key"]:
                out.append(f"  another artifact of the run: {other}")
        if self.replay:
            out.append(f"replay: {self.replay['status']}")
            out += [f"  {p}" for p in self.replay.get("problems", [])]
            out += [f"  live part {x['part']} ({x['source']}.{x['table']}, query {x['fingerprint'][:16]}…): "
                    f"{x['status']}" for x in self.replay.get("live", [])]
        for pin in self.pins:
            out.append(f"pin {pin.table}@{pin.snapshot_id}: committed {pin.committed_at} by Dagster run "
                       f"{pin.dagster_run_id or '(none: not committed by Dagster)'}")
            for check in pin.checks:
                out.append(f"  check {check['kind']} {check['key']}: {'passed' if check['success'] else 'FAILED'}")
            if pin.checks_note:
                out.append(f"  {pin.checks_note}")
            if pin.source_load:
                out.append(f"  source load: {orjson.dumps(pin.source_load).decode()}")
            out += [f"  {p}" for p in pin.problems]
        for seg in self.segments:
            state = "checksum ok" if seg.checksum_ok and seg.lines_ok else f"TAMPERED: {seg.problem}"
            out.append(f"segment {seg.key} lines {_ranges(seg.lines)}: {state}")
        out += [f"problem: {p}" for p in self.problems]
        return "\n".join(out)


def audit(lake: Lake, run_id: str, *, engine: ContextEngine | None = None) -> AuditTrail:
    """Walk from run ``run_id``'s decision to the artifact it read, the snapshots it pinned and their segments.

    Raises:
        InvalidRequest: the run id is empty or only dots.
        RunNotFound: no event and no artifact of this run.
    """
    check_run_id(run_id)
    events = _run_events(lake, run_id)
    decisions = [e for e in events if e["type"] == "decision"]
    decision = decisions[-1] if decisions else None
    try:
        keys = artifact_keys(lake.store, run_id)
    except ArtifactNotFound:
        keys = []
    if not events and not keys:
        raise RunNotFound(f"run {run_id!r} has no event in raw.events and no context artifact; give the id of an "
                          "agent run that has been ingested (`agentlake query \"SELECT DISTINCT run_id FROM "
                          "raw.events\"` lists them)")
    trail = AuditTrail(run_id, decision, events[:MAX_EVENTS], None, None, [], [], artifacts=sorted(keys))
    key, found_by = _chosen_artifact(decision, keys, trail)
    if key is None:
        trail.problems.append(f"run {run_id!r} has no context artifact: nothing records what it read")
        return trail
    try:
        artifact = load_artifact(lake.store, key)
    except ArtifactTampered as exc:
        trail.manifest_tampered = True
        trail.problems.append(f"tampered: {exc}")
        trail.replay = {"status": TAMPERED, "problems": [str(exc)]}
        return trail
    except ArtifactNotFound as exc:
        trail.problems.append(str(exc))
        return trail
    manifest = artifact.manifest
    if manifest.get("run_id") != run_id:
        trail.manifest_tampered = True
        trail.problems.append(f"tampered: the artifact {key} names run {manifest.get('run_id')!r}, not {run_id!r}")
    trail.artifact = {
        "key": key, "uri": artifact.ref.uri, "found_by": found_by, "agent_id": manifest.get("agent_id"),
        "created_at": manifest.get("created_at"), "as_of": manifest.get("as_of"), "request": manifest.get("request"),
        "plan": manifest.get("plan"), "pins": manifest.get("pins"), "record_count": manifest.get("record_count"),
        "records_hash": manifest.get("records_hash"),
        "parts": {name: {"key": p.get("key"), "rows": p.get("rows"), "keys": p.get("keys")}
                  for name, p in manifest.get("parts", {}).items()},
        "files_verified": not artifact.problems,
    }
    owned = engine is None
    engine = engine or ContextEngine(lake)
    try:
        (report,) = replay(lake, key, engine=engine)
    finally:
        if owned:
            engine.close()
    trail.replay = {"status": report.status, "expected_hash": report.expected_hash,
                    "actual_hash": report.actual_hash, "log_verified": report.log_verified,
                    "problems": report.problems,
                    # Parts read live from a source: no snapshot to pin; whether the source still returns them.
                    "live": [{"part": x.part, "source": x.source, "table": x.table, "fingerprint": x.fingerprint,
                              "status": x.status, "problem": x.problem,
                              "changed_keys": x.diff.changed_keys if x.diff else [],
                              "removed_keys": x.diff.removed_keys if x.diff else [],
                              "added_keys": x.diff.added_keys if x.diff else []} for x in report.live]}
    tables = _tables(lake, list(artifact.pins))
    trail.pins = [_pin(lake, tables.get(name), name, snapshot_id) for name, snapshot_id in sorted(artifact.pins.items())]
    trail.segments = verify_segments(lake, _record_lines(artifact.records, manifest, tables, artifact.pins, trail))
    return trail


def _chosen_artifact(decision: dict[str, Any] | None, keys: list[str], trail: AuditTrail) -> tuple[str | None, str]:
    named = _named_artifact(decision)
    if named is not None:
        key = named[named.index("artifacts/"):] if "artifacts/" in named else named
        if key not in keys:
            trail.problems.append(f"the decision names artifact {named}, which is not among the run's artifacts")
        return key, "named by the decision's context_artifact attribute"
    if not keys:
        return None, ""
    return max(keys, key=_created_of), "the run's latest artifact"


def _named_artifact(decision: dict[str, Any] | None) -> str | None:
    if decision is None or not decision.get("attributes"):
        return None
    try:
        attributes = orjson.loads(decision["attributes"])
    except orjson.JSONDecodeError:
        return None
    named = attributes.get("context_artifact") if isinstance(attributes, dict) else None
    return named if isinstance(named, str) and named else None


def _created_of(key: str) -> str:
    return key.split("/dt=", 1)[-1]


def _run_events(lake: Lake, run_id: str) -> list[dict[str, Any]]:
    try:
        table = lake.table(EVENTS.name)
    except NoSuchTableError:
        return []
    rows = table.scan(row_filter=one_of("run_id", [run_id]), selected_fields=EVENT_COLUMNS).to_arrow()
    events = rows.sort_by([("ts", "ascending"), ("event_id", "ascending")]).to_pylist()
    for event in events:
        event["ts"] = _iso(event["ts"])
    return events


def _tables(lake: Lake, names: list[str]) -> dict[str, Table]:
    found = {}
    for name in names:
        try:
            found[name] = lake.table(name)
        except NoSuchTableError:
            continue
    return found


def _pin(lake: Lake, table: Table | None, name: str, snapshot_id: int | None) -> PinAudit:
    pin = PinAudit(name, snapshot_id)
    if snapshot_id is None:
        # Not a fault: the table was empty (or an ext table not loaded yet) when the artifact read it.
        pin.checks_note = (f"{name} had no snapshot when the artifact read it (an empty table, or a source not "
                           "loaded yet): its part read no rows, and there is nothing to check or trace")
        return pin
    if table is None:
        pin.problems.append(f"{name} has no table: snapshot {snapshot_id} cannot be traced")
        return pin
    snapshot = _snapshot(lake, table, name, snapshot_id)
    if snapshot is None:
        pin.problems.append(f"snapshot {snapshot_id} of {name} is in neither the table's metadata nor a pin record")
        return pin
    props = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
    pin.committed_at = _iso(datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC))
    pin.dagster_run_id = props.get(DAGSTER_RUN_PROPERTY) or None
    pin.ingest_run_id = props.get("agentlake.run-id")
    pin.operation = snapshot.summary.operation.value if snapshot.summary else None
    pin.partition = props.get("agentlake.partition")
    load = {k.removeprefix("agentlake."): v for k, v in sorted(props.items())
            if k in LOAD_KEYS or k.startswith(LOAD_PREFIX)}
    pin.source_load = load or None
    pin.checks = _checks(lake, table, name, snapshot, props)
    if not any(c["kind"] == "validation" for c in pin.checks):
        pin.checks_note = (f"no validation result is kept for snapshot {snapshot_id} of {name}: "
                           + ("facts are committed once the raw rows they derive from passed raw.events' gate"
                              if name.startswith("facts.") else "it was not committed through the quality gate "
                              "(a commit straight to main, maintenance, or the gate turned off)"))
    return pin


def _snapshot(lake: Lake, table: Table, name: str, snapshot_id: int) -> Snapshot | None:
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is not None:
        return snapshot
    try:
        location = snapshot_location(lake, table, name, snapshot_id)
    except SnapshotGone:
        return None
    return FromInputFile.table_metadata(table.io.new_input(location)).snapshot_by_id(snapshot_id)


def _checks(lake: Lake, table: Table, name: str, snapshot: Snapshot, props: dict[str, str]) -> list[dict[str, Any]]:
    """The kept validation of the snapshot (or of the staged one it rewrote), and publish records of its segments."""
    candidates = [snapshot.snapshot_id]
    parent = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    if parent is not None and parent.summary is not None:
        pp = parent.summary.additional_properties
        # A batch whose bad rows were dropped on its branch: validated as staged, published as rewritten.
        if pp.get("agentlake.staged") == "true" and pp.get("agentlake.run-id") == props.get("agentlake.run-id"):
            candidates.append(parent.snapshot_id)
    checks: list[dict[str, Any]] = []
    for candidate in candidates:
        key = validation_key(name, candidate)
        try:
            result = orjson.loads(lake.store.get(key))
        except ObjectNotFound:
            continue
        checks.append({
            "kind": "validation", "key": key, "uri": lake.store.uri(key), "snapshot_id": candidate,
            "data_docs": lake.store.uri(data_docs_key(name, candidate)),
            "success": bool(result.get("success")), "statistics": result.get("statistics", {}),
            "expectations": [{"type": r.get("expectation_config", {}).get("type"), "success": r.get("success")}
                             for r in result.get("results", [])],
        })
        break
    segments = set(orjson.loads(props["agentlake.segments"])) if "agentlake.segments" in props else set()
    if segments:
        for info in lake.store.list(AUDIT_RECORDS):
            record = orjson.loads(lake.store.get(info.key))
            if segments & set(record.get("segments", [])):
                checks.append({"kind": "publish", "key": info.key, "uri": lake.store.uri(info.key),
                               "success": record.get("action") != "override", "action": record.get("action"),
                               "reason": record.get("reason"), "failed": record.get("failed", [])})
    return checks


def _record_lines(records: dict[str, pa.Table | None], manifest: dict[str, Any], tables: dict[str, Table],
                  pins: dict[str, int | None], trail: AuditTrail) -> dict[str, dict[int, str | None]]:
    """Per segment key, the line offsets the artifact's records came from (with the event id expected there)."""
    found: dict[str, dict[int, str | None]] = {}
    request = manifest.get("request", {})
    sources = {s.get("name") or s.get("table"): s.get("table") for s in request.get("sources", [])}
    # A part read from an external source (an ext table, or the source itself, live) has no log lines: its
    # lineage is the source load that published its snapshot (the pin), or the query its artifact keeps.
    external = {s.get("name") or s.get("table") for s in request.get("sources", [])
                if s.get("live") is not None or str(s.get("table") or "").startswith("ext.")}
    for part, rows in records.items():
        if rows is None or rows.num_rows == 0 or part in external:
            continue
        names = [sources[part]] if part in sources else [t for t in tables if "segment_key" in _columns(t)]
        if {"segment_key", "line_offset"} <= set(rows.column_names):
            ids = rows.column("event_id").to_pylist() if "event_id" in rows.column_names else [None] * rows.num_rows
            _add(found, rows.column("segment_key").to_pylist(), rows.column("line_offset").to_pylist(), ids)
            continue
        key = next((k for k in ("event_id", "run_id") if k in rows.column_names), None)
        if key is None:
            trail.problems.append(f"the records of part {part!r} carry neither segment_key nor event_id nor run_id: "
                                  "their segments cannot be named")
            continue
        values = sorted({v for v in rows.column(key).to_pylist() if v is not None})
        for name in names:
            table = tables.get(name)
            if table is None or "segment_key" not in _columns(name) or key not in _columns(name):
                continue
            lineage = _lineage(table, key, values, pins.get(name))
            _add(found, lineage.column("segment_key").to_pylist(), lineage.column("line_offset").to_pylist(),
                 lineage.column("event_id").to_pylist() if "event_id" in lineage.column_names else
                 [None] * lineage.num_rows)
    return found


def _columns(name: str) -> set[str]:
    tdef = TABLES_BY_NAME.get(name)
    return {c[0] for c in tdef.columns} if tdef else set()


def _lineage(table: Table, key: str, values: list[Any], snapshot_id: int | None) -> pa.Table:
    # The event id too, when the table has one: the line it names is checked to hold that event.
    with_id = ("event_id",) if "event_id" in _columns(".".join(table.name())) else ()
    fields = tuple(dict.fromkeys((key, "segment_key", "line_offset", *with_id)))
    # At the pinned snapshot while the table holds it; a row's lineage never changes, so else at main.
    at = snapshot_id if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is not None else None
    return table.scan(row_filter=one_of(key, values), selected_fields=fields, snapshot_id=at).to_arrow()


def _add(found: dict[str, dict[int, str | None]], keys: list[Any], offsets: list[Any], ids: list[Any]) -> None:
    for key, offset, event_id in zip(keys, offsets, ids, strict=True):
        if key is not None and offset is not None:
            found.setdefault(str(key), {})[int(offset)] = event_id


def verify_segments(lake: Lake, lines: dict[str, dict[int, str | None]]) -> list[SegmentAudit]:
    """Read each segment back from the log: it exists, its bytes match its key's checksum, each line holds its event."""
    out = []
    for key in sorted(lines):
        offsets = lines[key]
        seg = SegmentAudit(key, sorted(offsets))
        out.append(seg)
        try:
            info = SegmentInfo.from_key(key)
        except InvalidSegmentKey as exc:
            seg.problem = str(exc)
            continue
        seg.checksum = info.checksum
        seg.in_log = lake.store.exists(key)
        if not seg.in_log:
            seg.problem = f"segment {key} is not in the log"
            continue
        data = lake.store.get(key)
        # The key's checksum first: a tampered object may not even decompress.
        if checksum(data) != info.checksum:
            seg.problem = (f"tampered: segment {key} does not match the checksum in its key (object changed or "
                           "truncated); restore it from a replica or backup: the log is write-once")
            continue
        try:
            read = [line for _, run in lake.log.iter_chunks(key, compressed=iter([data]))
                    for line in run[:-1].split(b"\n")]
        except BadSegment as exc:
            seg.problem = f"tampered: {exc}"
            continue
        except (AgentLakeError, zstandard.ZstdError) as exc:
            seg.problem = f"segment {key} cannot be read: {exc}"
            continue
        seg.checksum_ok = True
        wrong = [o for o, event_id in offsets.items() if not _holds_event(read, o, event_id)]
        seg.lines_ok = not wrong
        if wrong:
            seg.problem = (f"tampered: lines {_ranges(sorted(wrong))} of segment {key} do not hold the events "
                           "the tables record there")
    return out


def _holds_event(lines: list[bytes], offset: int, event_id: str | None) -> bool:
    if not 0 <= offset < len(lines):
        return False
    if event_id is None:
        return True
    try:
        event = orjson.loads(lines[offset])
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("event_id") == event_id


def _ranges(offsets: list[int]) -> str:
    spans: list[str] = []
    start = prev = None
    for o in offsets:
        if start is None:
            start = prev = o
        elif prev is not None and o == prev + 1:
            prev = o
        else:
            spans.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = o
    if start is not None:
        spans.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(spans)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


# --- a day's decisions, for the context index's materializations -----------------------------------


@dataclass
class DayDecision:
    """One artifact made on a day: its run's decision and, per pinned table, the snapshot and its Dagster run."""

    run_id: str
    agent_id: str
    artifact_key: str
    decision: str | None
    pins: dict[str, int | None]
    committed_by: dict[str, str | None]


def day_decisions(lake: Lake, day: str, *, limit: int = 100) -> list[DayDecision]:
    """The decisions of the runs that made artifacts on ``day`` (at most ``limit``, newest artifacts first).

    Only artifacts whose manifest hashes to its address are listed; the index's checks name the others.
    """
    found: list[DayDecision] = []
    for key in sorted(artifact_manifest_keys(lake, day), key=_created_of, reverse=True):
        if len(found) >= limit:
            break
        try:
            manifest = load_artifact(lake.store, key).manifest
        except (ArtifactTampered, ArtifactNotFound):
            continue
        found.append(DayDecision(str(manifest["run_id"]), str(manifest.get("agent_id")), key, None,
                                 {t: (int(v) if v is not None else None) for t, v in manifest["pins"].items()}, {}))
    if not found:
        return found
    try:
        rows = lake.table(EVENTS.name).scan(
            row_filter=one_of("run_id", sorted({d.run_id for d in found})),
            selected_fields=("run_id", "type", "ts", "decision_label"),
        ).to_arrow().sort_by([("ts", "ascending")]).to_pylist()
    except NoSuchTableError:
        rows = []
    labels = {r["run_id"]: r["decision_label"] or "(no label)" for r in rows if r["type"] == "decision"}
    tables = _tables(lake, sorted({t for d in found for t in d.pins}))
    for d in found:
        d.decision = labels.get(d.run_id)
        for name, snapshot_id in d.pins.items():
            table = tables.get(name)
            snapshot = table.snapshot_by_id(snapshot_id) if table is not None and snapshot_id is not None else None
            props = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
            d.committed_by[name] = props.get(DAGSTER_RUN_PROPERTY) or None
    return found


# --- the rendered page -----------------------------------------------------------------------------


def render_html(trail: AuditTrail, *, dagster_url: str = "") -> str:
    """The trail as one read-only HTML page, every value escaped; runs link to the Dagster UI at ``dagster_url``."""
    e = html.escape
    state = "TAMPERED" if trail.tampered else "verified"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Audit of run {e(trail.run_id)}</title>"
             "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;"
             "vertical-align:top}table{border-collapse:collapse}.bad{color:#b00;font-weight:bold}</style>"
             f"</head><body><h1>Audit of run <code>{e(trail.run_id)}</code>: "
             f"<span class='{'bad' if trail.tampered else 'ok'}'>{state}</span></h1>"]
    parts.append("<h2>Decision</h2>")
    parts.append(_kv(trail.decision) if trail.decision else "<p>No decision event of this run in raw.events.</p>")
    parts.append("<h2>Artifact</h2>")
    if trail.artifact:
        a = trail.artifact
        parts.append(_kv({k: a[k] for k in ("key", "uri", "found_by", "agent_id", "created_at", "record_count",
                                            "records_hash", "request")}))
        plans = a["plan"] if isinstance(a["plan"], dict) else {"plan": a["plan"]}
        parts += [f"<h3>Plan of {e(str(name))}</h3><pre>{e(_text(plan))}</pre>" for name, plan in plans.items()]
    else:
        parts.append("<p>No context artifact.</p>")
    if trail.replay:
        bad = trail.replay["status"] == TAMPERED
        parts.append(f"<h2>Replay: <span class='{'bad' if bad else 'ok'}' id='replay-status'>"
                     f"{e(str(trail.replay['status']))}</span></h2>")
        parts += [f"<p class='bad'>{e(p)}</p>" for p in trail.replay.get("problems", [])]
        parts += [f"<p>live part {e(x['part'])} ({e(x['source'])}.{e(x['table'])}, query "
                  f"{e(x['fingerprint'][:16])}…): <span class='live-status'>{e(x['status'])}</span></p>"
                  for x in trail.replay.get("live", [])]
    parts.append("<h2>Pinned snapshots</h2><table><tr><th>table</th><th>snapshot</th><th>committed</th>"
                 "<th>Dagster run</th><th>checks</th></tr>")
    for pin in trail.pins:
        run = e(pin.dagster_run_id or "")
        link = f"<a href='{e(dagster_url)}/runs/{run}'>{run}</a>" if pin.dagster_run_id else "none (not by Dagster)"
        checks = "".join(f"<div>{e(c['kind'])} {e(c['key'])}: {'passed' if c['success'] else 'FAILED'}</div>"
                         for c in pin.checks) + (f"<div>{e(pin.checks_note)}</div>" if pin.checks_note else "")
        if pin.source_load:
            checks += f"<div>source load: {e(orjson.dumps(pin.source_load).decode())}</div>"
        checks += "".join(f"<div class='bad'>{e(p)}</div>" for p in pin.problems)
        parts.append(f"<tr><td>{e(pin.table)}</td><td>{pin.snapshot_id}</td><td>{e(pin.committed_at or '')}</td>"
                     f"<td>{link}</td><td>{checks}</td></tr>")
    parts.append("</table><h2>Log segments</h2><table><tr><th>segment</th><th>lines</th><th>checksum</th></tr>")
    for seg in trail.segments:
        ok = seg.checksum_ok and seg.lines_ok
        parts.append(f"<tr><td><code>{e(seg.key)}</code></td><td>{e(_ranges(seg.lines))}</td>"
                     f"<td class='{'ok' if ok else 'bad'}'>{'verified' if ok else e(seg.problem)}</td></tr>")
    parts.append("</table>")
    if trail.problems:
        parts.append("<h2>Problems</h2>" + "".join(f"<p class='bad'>{e(p)}</p>" for p in trail.problems))
    parts.append(f"<h2>The run's events ({len(trail.events)})</h2><table><tr><th>ts</th><th>type</th>"
                 "<th>event</th><th>segment</th><th>line</th></tr>")
    for ev in trail.events:
        parts.append(f"<tr><td>{e(str(ev['ts']))}</td><td>{e(str(ev['type']))}</td><td>{e(str(ev['event_id']))}</td>"
                     f"<td><code>{e(str(ev['segment_key']))}</code></td><td>{ev['line_offset']}</td></tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


def _kv(data: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(_text(v))}</code></td></tr>"
                   for k, v in data.items())
    return f"<table>{rows}</table>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
