"""Table maintenance: compaction of small data files and snapshot expiry by a retention policy.

Ingestion commits often (one commit per table per sensor tick), and every commit leaves a
snapshot, a manifest and at least one small data file behind. Left alone, the cost of the
next commit grows with the snapshots in metadata.json and the cost of a scan with the data
files. Maintenance keeps both flat, and runs apart from ingestion (its own Dagster lane):

- **Compaction** rewrites the small data files of a partition into larger ones, sorted by run
  in small row groups (the layout of :mod:`agentlake.maintenance.clustering`), and commits "delete exactly these files + add the rewritten ones" in one
  transaction. It never deletes by a row filter, so rows another writer appends meanwhile are
  never touched; a conflicting commit makes it re-check that its files are still live and try
  again. Rows, and so reconciliation, are unchanged; so are the table properties (the ledgers).
- **Expiry** removes snapshots older than the retention, always keeping the last few of
  ``main`` and every snapshot a branch or tag references. Pins are not refs: a context
  artifact's pin is a record in the object store (:mod:`agentlake.context.pins`), so pinned snapshots
  expire from the table's metadata like the others and the metadata stays bounded. A pinned
  snapshot stays readable through the metadata file its pin names (metadata files are never
  deleted).
- **Deferred deletion**: files that only expired snapshots used are not deleted at once but
  recorded in a write-once trash record (``maintenance/trash/<table>/<noticed ms>-<id>.json``),
  and deleted once the pin retention (``AGENTLAKE_PIN_RETENTION_DAYS``, plus the pins' hour
  of rounding) has passed since they were noticed: any pin on a snapshot that was current
  when pinned ran out by then. Historical pins (as-of reads of older snapshots) made after the
  files were noticed keep theirs: those files are recorded again, for later.

Manifest merging happens on every commit (``commit.manifest-merge.enabled``, merge appends in
:mod:`agentlake.tables.files`), so the manifests a scan reads stay few without a separate step.
"""

from __future__ import annotations

import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import RemoveSnapshotsUpdate, ValidatableTableRequirement

from agentlake.config import Settings, setting_default
from agentlake.context.pins import PIN_GRANULARITY_MS, Pin, historical_pins, pins_in_force, retention_ms
from agentlake.errors import AgentLakeError, ObjectNotFound
from agentlake.gate.publish import discard, held, held_days, staged_branches
from agentlake.maintenance.clustering import ROW_GROUP_ROWS
from agentlake.storage.retry import DEFAULT_POLICY, RetryPolicy, StageRetry
from agentlake.storage.signing import record_problem, signed
from agentlake.tables.files import Checkpoint, ManifestCache, file_day, live_files, referenced_files
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import ALL_TABLES

MAIN = "main"
TRASH_PREFIX = "maintenance/trash"


class MaintenanceAborted(AgentLakeError):
    """Maintenance of a table kept conflicting with other writers; run it again (nothing was changed)."""


class UnknownTable(AgentLakeError):
    """Maintenance was asked for a table the catalog does not have."""


def _well_formed(name: str) -> bool:
    """Whether ``name`` reads as ``namespace.table`` (no empty part), the only form the catalog can look up."""
    parts = name.split(".")
    return len(parts) >= 2 and all(part.strip() for part in parts)


# --- policies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicy:
    """Which snapshots expiry keeps: those newer than ``keep_hours``, and at least the last
    ``keep_last`` of ``main``. Snapshots a branch or tag references are always kept."""

    # Defaults are the settings' declared ones (agentlake.config): no second copy here.
    keep_hours: float = setting_default("snapshot_retention_hours")
    keep_last: int = setting_default("snapshots_keep_last")
    # A staging branch no held record names and whose head is older than this was left by a run that
    # died between staging and publishing (no run takes an hour to audit a batch): it is removed.
    abandoned_branch_hours: float = 1.0

    def __post_init__(self) -> None:
        if self.keep_hours < 0 or self.keep_last < 1:
            raise ValueError("a retention policy keeps at least the last snapshot, for a non-negative time")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(keep_hours=settings.snapshot_retention_hours, keep_last=settings.snapshots_keep_last)


@dataclass(frozen=True)
class CompactionPolicy:
    """Which files compaction rewrites: files under ``small_file_bytes``, in partitions that
    have at least ``min_files`` of them, packed into outputs of about ``target_file_bytes``."""

    small_file_bytes: int = setting_default("compaction_small_file_bytes")
    target_file_bytes: int = setting_default("compaction_target_file_bytes")
    min_files: int = setting_default("compaction_min_files")

    @classmethod
    def from_settings(cls, settings: Settings) -> CompactionPolicy:
        return cls(small_file_bytes=settings.compaction_small_file_bytes,
                   target_file_bytes=settings.compaction_target_file_bytes, min_files=settings.compaction_min_files)


# --- reports ------------------------------------------------------------------------------------


@dataclass
class CompactionReport:
    """What one compaction of a table did."""

    table: str
    partitions_compacted: int = 0
    files_rewritten: int = 0
    files_written: int = 0
    rows_rewritten: int = 0
    bytes_rewritten: int = 0
    bytes_written: int = 0
    snapshot_id: int | None = None
    attempts: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExpiryReport:
    """What one expiry of a table did."""

    table: str
    snapshots_before: int = 0
    snapshots_expired: int = 0
    snapshots_kept: int = 0
    files_deferred: int = 0  # files only expired snapshots used, recorded for deletion after the pin retention
    bytes_deferred: int = 0
    trash_records_due: int = 0  # trash records whose pin retention had passed
    files_spared: int = 0  # files of due records that a later historical pin still reads: recorded again
    files_deleted: int = 0
    bytes_deleted: int = 0
    refused: list[str] = field(default_factory=list)  # paths trash records named that were not provably garbage
    branches_removed: list[str] = field(default_factory=list)  # staging branches of runs that died
    attempts: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TableFootprint:
    """A table's size at one moment: live data files and their bytes, snapshots, metadata.json bytes."""

    data_files: int = 0
    data_bytes: int = 0
    rows: int = 0
    snapshots: int = 0
    manifests: int = 0
    metadata_json_bytes: int = 0


@dataclass
class MaintenanceReport:
    """Compaction and expiry of one table, with its footprint before and after."""

    table: str
    compaction: CompactionReport
    expiry: ExpiryReport
    before: TableFootprint
    after: TableFootprint
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The figures the UI shows per table."""
        return {
            "table": self.table,
            "files_rewritten": self.compaction.files_rewritten,
            "files_written": self.compaction.files_written,
            "partitions_compacted": self.compaction.partitions_compacted,
            "snapshots_expired": self.expiry.snapshots_expired,
            "snapshots_kept": self.expiry.snapshots_kept,
            "files_deferred": self.expiry.files_deferred,
            "files_deleted": self.expiry.files_deleted,
            "bytes_deleted": self.expiry.bytes_deleted,
            "data_files_before": self.before.data_files,
            "data_files_after": self.after.data_files,
            "bytes_before": self.before.data_bytes,
            "bytes_after": self.after.data_bytes,
            "metadata_json_bytes_before": self.before.metadata_json_bytes,
            "metadata_json_bytes_after": self.after.metadata_json_bytes,
            "rows": self.after.rows,
        }


# --- compaction ---------------------------------------------------------------------------------


def compact(
    lake: Lake,
    table_name: str,
    day: str | None = None,
    *,
    policy: CompactionPolicy | None = None,
    retry: RetryPolicy = DEFAULT_POLICY,
    checkpoint: Checkpoint | None = None,
) -> CompactionReport:
    """Rewrite the small data files of a table (or of one arrival day's partition) into larger ones.

    One commit replaces exactly the files read with the files written. If another writer
    commits first, the files already written are committed on the next attempt as long as
    every file they replace is still live; otherwise they are deleted and the work planned again.

    Raises:
        MaintenanceAborted: commits kept conflicting ``retry.conflict_attempts`` times.
    """
    policy = policy or CompactionPolicy()
    check = checkpoint or (lambda _stage: None)
    report = CompactionReport(table_name)
    started = time.perf_counter()
    rewritten: list[_Rewrite] = []
    stage = StageRetry(f"compaction of {table_name}", policy=retry, aborted=MaintenanceAborted)

    def attempt() -> None:
        nonlocal rewritten
        report.attempts = stage.attempts
        table = lake.table(table_name)
        live = {f.file_path: f for f in live_files(table)}
        if rewritten and not all(path in live for r in rewritten for path in r.inputs):
            # Some input was removed meanwhile (a rebuild replaced the day): start over.
            _delete_written(table.io, rewritten)
            rewritten = []
        if not rewritten:
            groups = _plan(table, list(live.values()), policy, day)
            if not groups:
                return
            rewritten = [_rewrite(table, group, policy.target_file_bytes) for group in groups]
        check("before-commit:compaction")
        report.snapshot_id = _commit_rewrite(table, rewritten)
        check("after-commit:compaction")
        report.partitions_compacted = len({r.partition for r in rewritten})
        report.files_rewritten = sum(len(r.inputs) for r in rewritten)
        report.files_written = sum(len(r.outputs) for r in rewritten)
        report.rows_rewritten = sum(r.rows for r in rewritten)
        report.bytes_rewritten = sum(r.input_bytes for r in rewritten)
        report.bytes_written = sum(o.file_size_in_bytes for r in rewritten for o in r.outputs)

    try:
        stage.run(attempt)
    except MaintenanceAborted:
        _delete_written(lake.table(table_name).io, rewritten)
        raise
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Rewrite:
    """One group of small files of one partition and the file(s) they were rewritten into."""

    partition: str
    inputs: dict[str, DataFile]
    outputs: list[DataFile]
    rows: int
    input_bytes: int


def _plan(table: Table, live: list[DataFile], policy: CompactionPolicy, day: str | None) -> list[list[DataFile]]:
    """Groups of small files to rewrite, each within one partition and about ``target_file_bytes`` in all."""
    by_partition: dict[tuple[int, str], list[DataFile]] = {}
    with_deletes: set[tuple[int, str]] = set()
    for data_file in live:
        key = (data_file.spec_id, file_day(data_file))
        if day is not None and key[1] != day:
            continue
        if data_file.content != DataFileContent.DATA:
            with_deletes.add(key)  # rows of such a partition need their delete files: left alone
        elif data_file.spec_id == table.metadata.default_spec_id and data_file.file_size_in_bytes < policy.small_file_bytes:
            by_partition.setdefault(key, []).append(data_file)
    groups: list[list[DataFile]] = []
    for key, files in sorted(by_partition.items(), key=lambda kv: kv[0][1]):
        if key in with_deletes or len(files) < policy.min_files:
            continue
        files.sort(key=lambda f: f.file_path)
        group: list[DataFile] = []
        size = 0
        for data_file in files:
            if group and size + data_file.file_size_in_bytes > policy.target_file_bytes:
                groups.append(group)
                group, size = [], 0
            group.append(data_file)
            size += data_file.file_size_in_bytes
        if len(group) > 1:
            groups.append(group)
    return groups


def _rewrite(table: Table, group: list[DataFile], target_file_bytes: int) -> _Rewrite:
    """Read a group of files (projected on the current schema) and write them as one sorted file."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    data = scan.to_table([FileScanTask(f) for f in group])
    expected = sum(f.record_count for f in group)
    if data.num_rows != expected:
        raise AgentLakeError(
            f"compaction of {table.name()} read {data.num_rows} rows from files that hold {expected}; nothing was "
            "committed: check the table's files with `agentlake query` before running maintenance again"
        )
    # The layout agentlake.layout clusters a day into: sorted by run, in small row groups, so that a
    # context request for one run reads few row groups. Tables without runs: by segment and line.
    order = ("run_id", "event_id", "document_rank") if "run_id" in data.column_names else ("segment_key", "line_offset")
    data = data.sort_by([(c, "ascending") for c in order if c in data.column_names])
    properties = {**table.metadata.properties, "write.parquet.row-group-limit": str(ROW_GROUP_ROWS),
                  "write.target-file-size-bytes": str(target_file_bytes)}
    metadata = table.metadata.model_copy(update={"properties": properties})
    outputs = list(_dataframe_to_data_files(table_metadata=metadata, df=data, io=table.io))
    return _Rewrite(
        partition=file_day(group[0]),
        inputs={f.file_path: f for f in group},
        outputs=outputs,
        rows=data.num_rows,
        input_bytes=sum(f.file_size_in_bytes for f in group),
    )


def _commit_rewrite(table: Table, rewritten: list[_Rewrite]) -> int:
    """Replace exactly the input files with the outputs, in one snapshot of ``main``.

    Raises:
        CommitFailedException: ``main`` moved since ``table`` was loaded.
        ValidationException: an input file is no longer live.
    """
    properties = {
        "agentlake.maintenance": "compaction",
        "agentlake.files-rewritten": str(sum(len(r.inputs) for r in rewritten)),
        "agentlake.partitions": ",".join(sorted({r.partition for r in rewritten})),
    }
    with table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
            for r in rewritten:
                for data_file in r.inputs.values():
                    overwrite.delete_data_file(data_file)
                for data_file in r.outputs:
                    overwrite.append_data_file(data_file)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def _delete_written(io: FileIO, rewritten: Iterable[_Rewrite]) -> None:
    """Delete output files that no commit references (their commit failed or was abandoned)."""
    for r in rewritten:
        for data_file in r.outputs:
            try:
                io.delete(data_file.file_path)
            except FileNotFoundError:
                pass


# --- expiry -------------------------------------------------------------------------------------


class _AssertSafeToExpire(ValidatableTableRequirement):
    """Checked against the catalog's current metadata at commit time, so a ref made meanwhile wins.

    Every snapshot to expire still exists and no branch or tag references it.
    """

    type: Literal["agentlake-assert-safe-to-expire"] = "agentlake-assert-safe-to-expire"
    snapshot_ids: list[int]

    def validate(self, base_metadata: TableMetadata | None) -> None:  # type: ignore[override]
        if base_metadata is None:
            raise CommitFailedException("Requirement failed: current table metadata is missing")
        existing = {s.snapshot_id for s in base_metadata.snapshots}
        if missing := set(self.snapshot_ids) - existing:
            raise CommitFailedException(f"Requirement failed: snapshots {sorted(missing)} were already expired")
        doomed = set(self.snapshot_ids)
        for name, ref in base_metadata.refs.items():
            if ref.snapshot_id in doomed:
                raise CommitFailedException(f"Requirement failed: {name} now references snapshot {ref.snapshot_id}")


def expire(
    lake: Lake,
    table_name: str,
    now: datetime | None = None,
    policy: RetentionPolicy | None = None,
    *,
    delete_files: bool = True,
    retry: RetryPolicy = DEFAULT_POLICY,
    checkpoint: Checkpoint | None = None,
) -> ExpiryReport:
    """Expire the table's snapshots that the retention policy no longer keeps.

    Kept always: the last ``policy.keep_last`` snapshots of ``main`` and every snapshot that a
    branch or tag references.
    With ``delete_files``, the files that only expired snapshots referenced are recorded in a
    trash record, and the files of trash records older than the pin retention are deleted
    (see :func:`empty_trash`).

    Raises:
        MaintenanceAborted: commits kept conflicting ``retry.conflict_attempts`` times.
    """
    policy = policy or RetentionPolicy()
    check = checkpoint or (lambda _stage: None)
    now = now or datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    cutoff_ms = now_ms - int(policy.keep_hours * 3600 * 1000)
    report = ExpiryReport(table_name)
    started = time.perf_counter()
    stage = StageRetry(f"expiry of {table_name}", policy=retry, aborted=MaintenanceAborted)

    def attempt() -> None:
        report.attempts = stage.attempts
        table = lake.table(table_name)
        metadata = table.metadata
        report.snapshots_before = len(metadata.snapshots)
        protected = {ref.snapshot_id for ref in metadata.refs.values()}
        protected |= _last_of_main(metadata, policy.keep_last)
        doomed = [s.snapshot_id for s in metadata.snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected]
        if not doomed:
            report.snapshots_kept = len(metadata.snapshots)
            return
        expired_snapshots = [s for s in metadata.snapshots if s.snapshot_id in set(doomed)]
        updates: list[Any] = [RemoveSnapshotsUpdate(snapshot_ids=doomed)]  # type: ignore[call-arg]
        requirement: Any = _AssertSafeToExpire(snapshot_ids=doomed)
        check("before-commit:expiry")
        with table.transaction() as tx:
            # pyiceberg's own ExpireSnapshots checks nothing at commit time: a tag made between
            # loading and committing would be dropped with its snapshot. This requirement is
            # checked against the catalog's current metadata inside the commit.
            tx._apply(tuple(updates), (requirement,))
        report.snapshots_expired = len(doomed)
        report.snapshots_kept = len(table.metadata.snapshots)
        if delete_files:
            report.files_deferred, report.bytes_deferred = _defer_unreferenced(
                lake, lake.table(table_name), expired_snapshots, now_ms)

    stage.run(attempt)
    if delete_files:
        emptied = empty_trash(lake, table_name, now=now)
        report.trash_records_due, report.files_spared = emptied.records_due, emptied.files_spared
        report.files_deleted, report.bytes_deleted = emptied.files_deleted, emptied.bytes_deleted
        report.refused = emptied.refused
    report.seconds = time.perf_counter() - started
    return report


def _last_of_main(metadata: TableMetadata, keep_last: int) -> set[int]:
    """The head of ``main`` and its ancestors, ``keep_last`` snapshots in all (fewer if history is shorter)."""
    kept: set[int] = set()
    ref = metadata.refs.get(MAIN)
    snapshot = metadata.snapshot_by_id(ref.snapshot_id) if ref else None
    while snapshot is not None and len(kept) < keep_last:
        kept.add(snapshot.snapshot_id)
        parent = snapshot.parent_snapshot_id
        snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
    return kept


def trash_prefix(table_name: str) -> str:
    return f"{TRASH_PREFIX}/{table_name}/"


def _record_trash(lake: Lake, table_name: str, files: dict[str, int], noticed_ms: int) -> str:
    """A write-once trash record of files no snapshot in the table references any more."""
    key = f"{trash_prefix(table_name)}{noticed_ms:015d}-{uuid.uuid4().hex[:12]}.json"
    body = signed(lake.settings.signing_key,
                  {"table": table_name, "noticed_ms": noticed_ms, "files": dict(sorted(files.items()))})
    lake.store.put_once(key, orjson.dumps(body))
    return key


def _defer_unreferenced(lake: Lake, table: Table, expired: list[Snapshot], now_ms: int) -> tuple[int, int]:
    """Record the files the expired snapshots referenced that no remaining snapshot references.

    ``table`` is loaded after the expiry commit. A writer committing meanwhile only adds new
    files or reuses manifests of the head of ``main``, which is never expired, so a file found
    unreferenced here is never referenced by the table again.
    """
    cache: ManifestCache = {}
    remaining = referenced_files(table.io, table.metadata.snapshots, cache)
    candidates = referenced_files(table.io, expired, cache)
    files = {path: size for path, size in candidates.items() if path not in remaining}
    if files:
        _record_trash(lake, ".".join(table.name()), files, now_ms)
    return len(files), sum(files.values())


@dataclass
class TrashReport:
    """What one pass over a table's trash records did."""

    records_due: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_spared: int = 0
    refused: list[str] = field(default_factory=list)  # paths a record named that are not provably garbage


def empty_trash(lake: Lake, table_name: str, *, now: datetime | None = None) -> TrashReport:
    """Delete the files of the table's trash records noticed more than the pin retention ago.

    A file that a historical pin made after the record (an as-of read of an older snapshot)
    still reads is spared: recorded again as noticed now, so it goes once that pin has run out.
    Each due record is removed after its files; a pass cut short is finished by the next one.
    """
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    due_before = now_ms - retention_ms(lake.settings.pin_retention_days) - PIN_GRANULARITY_MS
    report = TrashReport()
    due = []
    for info in lake.store.list(trash_prefix(table_name)):
        stamp = info.key.rsplit("/", 1)[-1].split("-", 1)[0]
        if stamp.isdigit() and int(stamp) <= due_before:
            due.append((int(stamp), info.key))
    if not due:
        return report
    table = lake.table(table_name)
    later = [p for p in historical_pins(lake, table_name, min(n for n, _ in due)) if p.expires_ms > now_ms]
    read_by: dict[tuple[str, int], dict[str, int]] = {}
    garbage = _Garbage(lake, table, now_ms)
    for noticed_ms, key in sorted(due):
        try:
            record = orjson.loads(lake.store.get(key))
        except ObjectNotFound:
            continue  # another pass removed it meanwhile
        if (forged := record_problem(lake.settings, record)) is not None:
            report.refused.append(f"{key}: {forged}; nothing it names is deleted")
            continue  # left in place, for whoever investigates
        files: dict[str, int] = record["files"]
        spared: dict[str, int] = {}
        for pin in later:
            if pin.created_ms > noticed_ms:
                pinned = read_by.get((pin.metadata_location, pin.snapshot_id))
                if pinned is None:
                    pinned = read_by[(pin.metadata_location, pin.snapshot_id)] = _pinned_files(table, pin)
                spared.update({path: size for path, size in files.items() if path in pinned})
        if spared:
            _record_trash(lake, table_name, spared, now_ms)
        # Manifest lists first: a reader finding a snapshot's manifest list can still read its files
        # unless this pass is under way (see agentlake.query.snapshot_location).
        for path in sorted(files, key=_deletion_order):
            size = files[path]
            if path in spared:
                continue
            refusal = garbage.refusal(path)
            if refusal is not None:  # a record names what is not provably garbage: nothing is deleted on its word
                report.refused.append(f"{path}: {refusal} (named by {key})")
                continue
            try:
                table.io.delete(path)
            except FileNotFoundError:
                continue
            report.files_deleted += 1
            report.bytes_deleted += size
        try:
            lake.store.delete(key)
        except (FileNotFoundError, ObjectNotFound):
            pass
        report.records_due += 1
        report.files_spared += len(spared)
    return report


class _Garbage:
    """Whether a path a trash record names is provably this table's garbage; a record's word is not enough.

    A trash record is an object in the store, and anyone with write access to the store can write
    one. So a file is deleted only if it lies under the table's own data or metadata folder, is no
    metadata file (those are never deleted: pins and as-of reads go through them), and no snapshot
    in the table's metadata (``main``, branches, tags) nor any pin in force references it.
    """

    def __init__(self, lake: Lake, table: Table, now_ms: int) -> None:
        self._lake, self._table, self._now_ms = lake, table, now_ms
        location = table.location().rstrip("/")
        self._folders = (f"{location}/data/", f"{location}/metadata/")
        self._referenced: set[str] | None = None

    def refusal(self, path: str) -> str | None:
        scheme, sep, rest = path.partition("://")
        normal = f"{scheme}{sep}{posixpath.normpath(rest)}" if sep else posixpath.normpath(path)
        if normal != path or "/../" in f"/{rest}/":
            return "not a plain path"
        if not path.startswith(self._folders):
            return f"outside the table's own folders ({', '.join(self._folders)})"
        if path.endswith(".metadata.json"):
            return "a metadata file, which is never deleted"
        if path in self.referenced():
            return "still referenced by a snapshot of the table or a pin in force"
        return None

    def referenced(self) -> set[str]:
        if self._referenced is None:
            cache: ManifestCache = {}
            found = set(referenced_files(self._table.io, self._table.metadata.snapshots, cache))
            in_metadata = {s.snapshot_id for s in self._table.metadata.snapshots}
            for pin in pins_in_force(self._lake, _table_name(self._table), self._now_ms):
                if pin.snapshot_id not in in_metadata:
                    found |= set(_pinned_files(self._table, pin))
            self._referenced = found
        return self._referenced


def _table_name(table: Table) -> str:
    return ".".join(table.name())


def _deletion_order(path: str) -> tuple[int, str]:
    name = path.rsplit("/", 1)[-1]
    return (0 if name.startswith("snap-") else 1 if name.endswith(".avro") else 2, path)


def _pinned_files(table: Table, pin: Pin) -> dict[str, int]:
    """Every file the pinned snapshot reads, from the metadata file its pin names."""
    metadata = FromInputFile.table_metadata(table.io.new_input(pin.metadata_location))
    snapshot = metadata.snapshot_by_id(pin.snapshot_id)
    if snapshot is None:
        return {}
    return referenced_files(table.io, [snapshot], {})


# --- both, per table ----------------------------------------------------------------------------


def footprint(table: Table) -> TableFootprint:
    """The table's live data files and bytes, snapshots, manifests and metadata.json size now."""
    out = TableFootprint(snapshots=len(table.metadata.snapshots))
    snapshot = table.current_snapshot()
    if snapshot is not None:
        out.manifests = len(snapshot.manifests(table.io))
        files = live_files(table, snapshot, data_only=True)
        out.data_files = len(files)
        out.data_bytes = sum(f.file_size_in_bytes for f in files)
        out.rows = sum(f.record_count for f in files)
    out.metadata_json_bytes = len(table.io.new_input(table.metadata_location))
    return out


def maintained_tables(lake: Lake) -> list[str]:
    """Every AgentLake table in the catalog: the raw and fact tables, and the context index once it exists."""
    from agentlake.context.index import CONTEXT_ARTIFACTS

    names = [t.name for t in ALL_TABLES]
    return names + [CONTEXT_ARTIFACTS.name] if lake.catalog.table_exists(CONTEXT_ARTIFACTS.name) else names


def remove_abandoned_branches(lake: Lake, table_name: str, *, now: datetime | None = None,
                              policy: RetentionPolicy | None = None) -> list[str]:
    """Remove the staging branches that runs killed between staging and publishing left behind.

    A branch a held record names is kept (the held batch stays inspectable); so is one whose head
    is newer than the policy's ``abandoned_branch_hours`` (its run may still be auditing). Once
    removed, the branch's snapshots expire like any other and their files are deferred as usual.
    """
    policy = policy or RetentionPolicy.from_settings(lake.settings)
    cutoff_ms = int((now or datetime.now(UTC)).timestamp() * 1000) - int(policy.abandoned_branch_hours * 3600_000)
    table = lake.table(table_name)
    held_branches = {record["branch"] for day in held_days(table.properties)
                     for record in held(table.properties, day).values()}
    removed = []
    for branch in staged_branches(table):
        head = table.metadata.snapshot_by_id(table.metadata.refs[branch].snapshot_id)
        if branch in held_branches or head is None or head.timestamp_ms >= cutoff_ms:
            continue
        discard(table, branch)
        removed.append(branch)
    return removed


def maintain(
    lake: Lake,
    tables: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
    retention: RetentionPolicy | None = None,
    compaction: CompactionPolicy | None = None,
    delete_files: bool = True,
    progress: Callable[[MaintenanceReport], None] | None = None,
) -> list[MaintenanceReport]:
    """Compact, then expire, each table (default: all of AgentLake's tables); one report per table.

    Raises:
        UnknownTable: a name the catalog does not have.
    """
    retention = retention or RetentionPolicy.from_settings(lake.settings)
    names = list(tables or maintained_tables(lake))
    # A name without a namespace ("nope") is refused here: the catalog would raise on it, not answer.
    if unknown := [n for n in names if not _well_formed(n) or not lake.catalog.table_exists(n)]:
        given = ", ".join(n or "''" for n in unknown)
        raise UnknownTable(f"no table {given}; the tables are {', '.join(t.name for t in ALL_TABLES)}")
    reports = []
    for name in names:
        started = time.perf_counter()
        before = footprint(lake.table(name))
        compacted = compact(lake, name, policy=compaction)
        abandoned = remove_abandoned_branches(lake, name, now=now, policy=retention)
        expired = expire(lake, name, now=now, policy=retention, delete_files=delete_files)
        expired.branches_removed = abandoned
        report = MaintenanceReport(name, compacted, expired, before, footprint(lake.table(name)),
                                   seconds=time.perf_counter() - started)
        if progress is not None:
            progress(report)
        reports.append(report)
    return reports
