"""Write-audit-publish on Iceberg: stage new data on a branch, audit it, move ``main`` only if it passed.

- **Write**: a batch's data files are committed to a branch ``agentlake.staged.<run id>.<day>.<n>``
  created at ``main``'s head. Readers of ``main`` do not see it; the branch (a ref) keeps its
  snapshots through expiry, so a held batch stays inspectable.
- **Audit**: the table's suite (:mod:`agentlake.gate.suites`) runs on exactly the rows the branch adds.
- **Publish**: a guarded fast-forward, in one transaction: ``main`` is set to the branch head only if
  ``main``'s head is an ancestor of it (pyiceberg 0.12 does not check: setting ``main`` to another
  ref silently drops whatever landed on ``main`` meanwhile), the branch is removed and the table
  properties (the ledger) are set. If ``main`` moved (another writer published meanwhile), the
  branch is dropped and ``MainMoved`` (a ``CommitFailedException``) starts the stage again from
  fresh table state: its deduplication and audit must see the other writer's rows, or an event
  in both batches would land on ``main`` twice. A stale update fails with
  ``CommitFailedException`` and is retried from a fresh read.

A batch whose audit failed is **held**: its segments are recorded in ``agentlake.held.<day>`` (a
table property) with the branch, the snapshot and the rules it broke, and are not in ``main``'s
ledger. Ingestion of other segments goes on; a held batch is retried on its own (after a fix), or
published as it is by an explicit, recorded override (:func:`override`).

Every override leaves a write-once audit record under ``audit/v1/publish/dt=<day>/``; with
``AGENTLAKE_SIGNING_KEY`` set it is signed, and a record there that does not prove it is AgentLake's
is never taken as one (:func:`audit_records` leaves it out, reconcile names it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import SecretStr
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import is_ancestor_of
from pyiceberg.table.update.snapshot import ManageSnapshots

from agentlake.config import Settings
from agentlake.errors import AgentLakeError, CommitConflict
from agentlake.storage.retry import StageRetry
from agentlake.storage.signing import record_problem, signed
from agentlake.storage.store import ObjectStore

STAGED_PREFIX = "agentlake.staged."
HELD_PREFIX = "agentlake.held."
AUDIT_RECORDS = "audit/v1/publish/"

Checkpoint = Callable[[str], None]
_log = logging.getLogger(__name__)


class MainMoved(CommitConflict, CommitFailedException):
    """``main`` moved after the batch was staged: the stage starts again, deduplicating against it.

    Also a ``CommitFailedException``, so that a caller that handles pyiceberg's conflicts handles it too.
    """


class AlreadyPublished(CommitConflict):
    """Another writer published the same segments while this batch was audited: drop the branch, start over."""


@dataclass
class Staged:
    """A batch committed to its own branch, not (yet) on ``main``."""

    table: str
    branch: str
    base_snapshot_id: int  # main's head when the branch was made
    snapshot_id: int  # the branch head
    files: list[DataFile] = field(default_factory=list)


def branch_name(run_id: str, day: str) -> str:
    """A fresh staging branch name: clearly AgentLake's, and which run and arrival day it holds."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id)
    return f"{STAGED_PREFIX}{safe}.{day}.{uuid.uuid4().hex[:8]}"


def staged_branches(table: Table) -> list[str]:
    """The staging branches a table holds (held batches, and any left by an interrupted run)."""
    return sorted(name for name in table.metadata.refs if name.startswith(STAGED_PREFIX))


def stage(table: Table, files: list[DataFile], branch: str, snapshot_properties: dict[str, str]) -> Staged:
    """Commit ``files`` to a new branch at ``main``'s head; ``main`` does not move."""
    if table.metadata.current_snapshot_id is None:
        # Iceberg writes to a branch only once main has a snapshot: start main with an empty one
        # (readers see an empty table before and after).
        with table.transaction() as tx, tx.update_snapshot(
            snapshot_properties={"agentlake.empty-start": "true"}
        ).fast_append():
            pass
    base = table.metadata.current_snapshot_id
    assert base is not None
    with table.transaction() as tx:
        with ManageSnapshots(tx) as refs:
            refs.create_branch(base, branch)
        with tx.update_snapshot(snapshot_properties=snapshot_properties, branch=branch).merge_append() as append:
            for data_file in files:
                append.append_data_file(data_file)
    head = table.metadata.refs[branch].snapshot_id
    return Staged(".".join(table.name()), branch, base, head, list(files))


def read_files(table: Table, files: list[DataFile], columns: list[str] | None = None) -> list[pa.Table]:
    """The rows of these data files (exactly what a staged commit adds), file by file."""
    out = []
    for data_file in files:
        with table.io.new_input(data_file.file_path).open() as handle:
            out.append(pq.read_table(handle, columns=columns))
    return out


def drop_rows(
    table: Table, staged: Staged, keep: list[pa.Array], rewrite: Callable[[list[pa.Table]], list[DataFile]],
    snapshot_properties: dict[str, str],
) -> Staged:
    """Replace the staged files that hold rows to drop by rewritten ones, on the branch (``main`` untouched).

    Args:
        keep: one boolean mask per staged file, in order (all true: the file stays as it is).
        rewrite: writes rows as new data files of the table.
    """
    removed, added = [], []
    for data_file, mask in zip(staged.files, keep, strict=True):
        if pc.all(mask).as_py():
            continue
        (rows,) = read_files(table, [data_file])
        removed.append(data_file)
        added += rewrite([rows.filter(mask)])
    if not removed:
        return staged
    with table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=snapshot_properties, branch=staged.branch).overwrite() as ow:
            for data_file in removed:
                if not hasattr(data_file, "_spec_id"):  # files written but never read from a manifest
                    data_file.spec_id = table.metadata.default_spec_id
                ow.delete_data_file(data_file)
            for data_file in added:
                ow.append_data_file(data_file)
    paths = {f.file_path for f in removed}
    files = [f for f in staged.files if f.file_path not in paths] + added
    return Staged(staged.table, staged.branch, staged.base_snapshot_id, table.metadata.refs[staged.branch].snapshot_id,
                  files)


def publish(
    table: Table, staged: Staged, properties: Callable[[Table], tuple[dict[str, str], tuple[str, ...]]],
    snapshot_properties: dict[str, str], check: Checkpoint, still_wanted: Callable[[Table], bool],
) -> int:
    """Move ``main`` to the staged batch by a guarded fast-forward (an append onto an empty ``main``).

    Args:
        properties: table properties to set and to remove in the same transaction (the ledger, the
            held record), computed from the fresh table state of each attempt.
        still_wanted: re-checks, on fresh table state, that ``main`` does not hold the batch already.

    Returns:
        The snapshot id ``main`` points at afterwards.

    Raises:
        AlreadyPublished: ``still_wanted`` said no; the branch has been removed.
        MainMoved: another writer published after the batch was staged; the branch has been removed.
        CommitFailedException: every attempt conflicted with another writer.
    """
    name = table.name()[-1]
    # Only this transaction's own conflicts are retried here; MainMoved and AlreadyPublished are
    # conflicts of the whole stage, which starts again from fresh table state.
    retry = StageRetry(f"publishing {staged.branch} to main of {'.'.join(table.name())}",
                       aborted=CommitFailedException)
    while True:
        if not still_wanted(table):
            discard(table, staged.branch)
            raise AlreadyPublished(f"{'.'.join(table.name())}: another writer published these segments first")
        main = table.metadata.current_snapshot_id
        head = table.metadata.refs[staged.branch].snapshot_id
        to_set, to_remove = properties(table)
        fast_forward = main is not None and is_ancestor_of(head, main, table.metadata)
        if main is not None and not fast_forward:
            # Another writer's rows landed on main after this batch was deduplicated and audited
            # against it: appending now could put an event_id on main twice. Stage it again.
            discard(table, staged.branch)
            raise MainMoved(
                f"{'.'.join(table.name())}: main moved while {staged.branch} was audited; staging the batch "
                "again from fresh table state"
            )
        check(f"before-commit:{name}")
        try:
            with table.transaction() as tx:
                if fast_forward:
                    with ManageSnapshots(tx) as refs:
                        refs.set_current_snapshot(snapshot_id=head).remove_branch(staged.branch)
                else:
                    with tx.update_snapshot(snapshot_properties=snapshot_properties).merge_append() as append:
                        for data_file in staged.files:
                            append.append_data_file(data_file)
                    with ManageSnapshots(tx) as refs:
                        refs.remove_branch(staged.branch)
                tx.set_properties(to_set)
                if to_remove:
                    tx.remove_properties(*to_remove)
        except Exception as exc:  # sorted by the retry policy: anything but a conflict is re-raised
            retry.failed(exc)
            table.refresh()
            continue
        check(f"after-commit:{name}")
        snapshot = table.current_snapshot()
        assert snapshot is not None
        return snapshot.snapshot_id


def discard(table: Table, branch: str) -> None:
    """Remove a staging branch (its snapshots become unreferenced; expiry then removes them).

    A branch that cannot be removed for conflicts is left in place, with a warning: it holds no
    data of ``main`` and a later discard (or a person) removes it.
    """
    retry = StageRetry(f"removing branch {branch} of {'.'.join(table.name())}", aborted=_BranchLeft)

    def attempt() -> None:
        table.refresh()
        if branch not in table.metadata.refs:
            return
        with table.transaction() as tx, ManageSnapshots(tx) as refs:
            refs.remove_branch(branch)

    try:
        retry.run(attempt)
    except _BranchLeft as exc:
        _log.warning("%s; the branch stays until a later discard removes it", exc)


class _BranchLeft(AgentLakeError):
    """A staging branch could not be removed for conflicts (logged, never raised to a caller)."""


# --- held batches --------------------------------------------------------------------------------


def held(properties: dict[str, str], day: str) -> dict[str, dict[str, Any]]:
    """The held segments of ``day``: segment key -> branch, staged snapshot, run id, failed rules, when."""
    text = properties.get(HELD_PREFIX + day)
    return orjson.loads(text) if text else {}


def held_days(properties: dict[str, str]) -> list[str]:
    return sorted(k[len(HELD_PREFIX):] for k in properties if k.startswith(HELD_PREFIX))


def hold(table: Table, day: str, staged: Staged, segment_keys: list[str], record: dict[str, Any]) -> None:
    """Record the batch's segments as held (a table property only: ``main``'s snapshot does not change)."""
    retry = StageRetry(f"recording held batch {staged.branch}", aborted=CommitFailedException)

    def attempt() -> set[str]:
        if retry.attempts > 1:
            table.refresh()
        current = held(table.properties, day)
        earlier = {current[k]["branch"] for k in segment_keys if k in current}
        for key in segment_keys:
            current[key] = {"branch": staged.branch, "snapshot_id": staged.snapshot_id, **record}
        with table.transaction() as tx:
            tx.set_properties({HELD_PREFIX + day: orjson.dumps(current).decode()})
        return earlier - {v["branch"] for v in current.values()}

    # An earlier attempt at the same segments, held too: its branch is superseded by this one.
    for branch in sorted(retry.run(attempt)):
        discard(table, branch)


def without_held(properties: dict[str, str], day: str, segment_keys: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Properties to set and to remove so that these segments are no longer held."""
    current = held(properties, day)
    if not any(k in current for k in segment_keys):
        return {}, ()
    for key in segment_keys:
        current.pop(key, None)
    if current:
        return {HELD_PREFIX + day: orjson.dumps(current).decode()}, ()
    return {}, (HELD_PREFIX + day,)


def write_audit_record(store: ObjectStore, record: dict[str, Any], signing_key: SecretStr | None = None) -> str:
    """Append a record of a publish decision to the store (write-once, never overwritten, signed with
    ``signing_key`` if given); returns its key."""
    now = datetime.now(UTC)
    key = f"{AUDIT_RECORDS}dt={now:%Y-%m-%d}/{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.json"
    body = signed(signing_key, {"at": now.isoformat(), **record})
    store.put_once(key, orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return key


def audit_records(store: ObjectStore, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every recorded publish decision AgentLake can prove its own, oldest first (with ``settings``' signing
    key set, the others are left out: :func:`untrusted_audit_records` names them)."""
    return [record for _, record, problem in _audit_records(store, settings) if problem is None]


def untrusted_audit_records(store: ObjectStore, settings: Settings, day: str | None = None) -> list[tuple[str, str]]:
    """The audit records (of one day, or all) that do not prove they are AgentLake's: ``(key, reason)``.

    Empty without a signing key: nothing can be proven then, and every record is taken as AgentLake's.
    """
    return [(key, problem) for key, _, problem in _audit_records(store, settings, day) if problem is not None]


def audit_record_days(store: ObjectStore) -> list[str]:
    """The days (``YYYY-MM-DD``) that hold audit records."""
    return [folder.rstrip("/").rsplit("/dt=", 1)[-1] for folder in store.list_folders(AUDIT_RECORDS)
            if "/dt=" in folder]


def _audit_records(
    store: ObjectStore, settings: Settings | None, day: str | None = None
) -> list[tuple[str, dict[str, Any], str | None]]:
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for info in store.list(f"{AUDIT_RECORDS}dt={day}/" if day else AUDIT_RECORDS):
        try:
            record = orjson.loads(store.get(info.key))
        except orjson.JSONDecodeError:
            out.append((info.key, {}, "it is not JSON: AgentLake did not write it"))
            continue
        if not isinstance(record, dict):
            out.append((info.key, {}, "it is not a JSON object: AgentLake did not write it"))
            continue
        out.append((info.key, record, record_problem(settings, record) if settings is not None else None))
    return out
