"""External sources: dlt extracts a source into a staging folder, AgentLake gates and publishes it into ``ext``.

The protocol of one load of one source:

1. **Extract (dlt)**: the source's resources are run through a dlt pipeline whose destination is a
   fresh staging folder of Parquet files (the pipeline and its state live in the same scratch
   folder, thrown away after the load). Each table is incremental on its cursor (``updated_at``),
   starting at the cursor ``ext.<table>`` last *published* (a table property): dlt's own state
   is not trusted with it, since a held load must be extracted again next time.
2. **Write**: per table, the rows that are new (no row of ``main`` with the same key has a cursor
   as recent) are merged onto ``main``'s content on a staging branch, in one snapshot: the data
   files holding a key of the load are rewritten without it, the load's rows are added, and rows the
   source reports deleted (its soft-delete column, ``is_deleted``) are left out. Readers of ``main``
   see nothing yet.
3. **Audit**: the table's Great Expectations suite runs on what the branch holds: keys not null
   and unique, the row count what the merge must give, the cursor not going backwards and the
   load's size within ``AGENTLAKE_SOURCES_MAX_LOAD_ROWS``.
4. **Publish** (:func:`agentlake.gate.publish.publish`): ``main`` fast-forwards to the branch in one
   commit with the new cursor in the table properties, so a reader sees the whole load or none of
   it. A failed batch rule **holds** the load: nothing publishes, the branch stays for inspection,
   the held record (``agentlake.held.sources``) says which rules failed.

Each published snapshot's summary records the dlt load id and the source state (cursor before and
after). dlt is imported only when a load runs: it takes seconds, and the Dagster definitions
import this module.
"""

from __future__ import annotations

import functools
import re
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table import Table
from pyiceberg.table.update.snapshot import ManageSnapshots
from sqlalchemy.exc import IntegrityError

from agentlake.config import Settings
from agentlake.errors import AgentLakeError, ConfigError, TerminalError
from agentlake.gate.batch import GateOutcome
from agentlake.gate.publish import MainMoved, discard, held, hold, publish
from agentlake.gate.suites import BATCH, BATCH_FRAME, SEVERITY, AuditResult, Rule, Suite, validate
from agentlake.gate.validations import keep_validation
from agentlake.sources.documents import HELD_DAY, DocumentsHeld, document_row, document_rules, load_documents
from agentlake.sources.helpdesk import API_PATH, DEMO_START
from agentlake.storage.store import ObjectStore
from agentlake.tables.external import (
    CUSTOMERS,
    DOCUMENT_FILES,
    NAMESPACE,
    TICKET_COMMENTS,
    TICKETS,
    ExternalTable,
)
from agentlake.tables.schemas import TABLE_PROPERTIES

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

    from agentlake.tables.lake import Lake

CURSOR_PROPERTY = "agentlake.source.cursor"
LOAD_ID_PROPERTY = "agentlake.source.load-id"
SOURCE_PROPERTY = "agentlake.source"
DLT_COLUMNS = ("_dlt_id",)  # dlt's own row ids: not kept (its _dlt_load_id is, as lineage)
MAX_PUBLISH_ATTEMPTS = 5
API_PAGE_SIZE = 200


class SourceError(AgentLakeError):
    """Base of the external sources' errors."""


class UnknownSource(TerminalError, SourceError):
    """A source name that is not configured: name one of ``agentlake sources ls``."""


class SourceLoadFailed(SourceError):
    """dlt could not extract a source (the database or service is away, or refused the query)."""


@dataclass(frozen=True)
class Source:
    """A configured external source: how it is extracted and which tables it publishes."""

    name: str
    kind: str  # "sql": dlt's sql_database over a SQLAlchemy URL; "rest": dlt's rest_api over an HTTP API
    tables: tuple[ExternalTable, ...]
    description: str = ""


HELPDESK = Source("helpdesk", "sql", (TICKETS, CUSTOMERS),
                  "tickets and customers of the helpdesk database (AGENTLAKE_SOURCES_SQL_URL)")
HELPDESK_API = Source("helpdesk_api", "rest", (TICKET_COMMENTS,),
                      "ticket comments from the helpdesk REST API (AGENTLAKE_SOURCES_API_URL)")
DOCUMENTS_SOURCE = Source("documents", "files", (DOCUMENT_FILES,),
                          "markdown and text documents of a folder (AGENTLAKE_SOURCES_DOCUMENTS_DIR)")
SOURCES: dict[str, Source] = {s.name: s for s in (HELPDESK, HELPDESK_API, DOCUMENTS_SOURCE)}


def configured(settings: Settings) -> list[Source]:
    """The sources this deployment can load: the REST API source only when its URL is set."""
    return [s for s in SOURCES.values() if s.kind != "rest" or settings.sources_api_url is not None]


def sources(names: list[str] | None = None, settings: Settings | None = None) -> list[Source]:
    """The configured sources (every declared one without ``settings``), or those named.

    Raises:
        UnknownSource: a name that is not declared.
        ConfigError: a named source that this deployment does not configure.
    """
    available = configured(settings) if settings is not None else list(SOURCES.values())
    if not names:
        return available
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise UnknownSource(f"no source named {unknown[0]!r}; the sources are {', '.join(SOURCES)} "
                            "(see `agentlake sources ls`)")
    missing = [n for n in names if SOURCES[n] not in available]
    if missing:
        raise ConfigError(f"source {missing[0]}: it is not configured; set AGENTLAKE_SOURCES_API_URL to the "
                          "helpdesk API's base URL (`make run` serves the demo's)")
    return [SOURCES[n] for n in names]


@dataclass
class Extract:
    """What dlt extracted in one load: its load id and each resource's rows (Arrow)."""

    load_id: str
    rows: dict[str, pa.Table]
    skipped: list[dict[str, str]] = field(default_factory=list)  # files that are not documents, with why


@dataclass
class TableLoad:
    """What one load did to one ``ext`` table."""

    source: str
    table: str
    load_id: str
    rows_loaded: int
    cursor_before: str | None
    cursor_after: str | None
    published_snapshot_id: int | None = None
    held: bool = False
    unchanged: bool = False
    rows: int | None = None  # rows of the table after the publish
    gate: GateOutcome | None = field(default=None, repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list)  # a files source: files left out, with why

    @property
    def failed(self) -> list[str]:
        return self.gate.audit.batch_failures if self.gate else []

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("source", "table", "load_id", "rows_loaded", "cursor_before",
                                              "cursor_after", "published_snapshot_id", "held", "unchanged", "rows",
                                              "skipped")}
        out["failed"] = self.failed
        if self.gate is not None:
            out["gate"] = self.gate.as_dict()
        return out


# --- extract (dlt) ------------------------------------------------------------------------------


def _scrub(text: str) -> str:
    """A library's message, first line only, with any credentials in a URL taken out."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return re.sub(r"//[^/@\s]+@", "//", first)[:300]


def extract_sql(url: str, source: Source, cursors: dict[str, datetime | None], scratch: Path) -> Extract:
    """Run dlt's ``sql_database`` source over ``url`` into Parquet files under ``scratch``; return their rows.

    Raises:
        SourceLoadFailed: dlt could not read the database (the message never carries the URL).
    """
    import dlt
    from dlt.sources.sql_database import sql_database

    # Telemetry would call out to the network from every load.
    dlt.config["runtime.dlthub_telemetry"] = False
    try:
        src = sql_database(credentials=url, table_names=[t.resource for t in source.tables], backend="pyarrow",
                           reflection_level="full_with_precision")
        for spec in source.tables:
            getattr(src, spec.resource).apply_hints(
                primary_key=spec.primary_key,
                incremental=dlt.sources.incremental(spec.cursor, initial_value=_naive(cursors.get(spec.name))))
        return _run(dlt, src, source, scratch)
    except Exception as exc:  # dlt wraps every failure in its own step exceptions: one line, no URL
        if isinstance(exc, AgentLakeError):
            raise
        exc = getattr(exc, "exception", None) or exc  # dlt's step failure wraps the cause
        raise SourceLoadFailed(f"source {source.name}: dlt could not extract it: {type(exc).__name__}: "
                               f"{_scrub(str(exc))}; check that the database is reachable and "
                               "AGENTLAKE_SOURCES_SQL_URL is right, then load again") from None


def extract_rest(base_url: str, source: Source, cursors: dict[str, datetime | None], scratch: Path) -> Extract:
    """Run dlt's ``rest_api`` source over the helpdesk API at ``base_url`` into Parquet under ``scratch``.

    Pages are numbered from 1 (dlt stops at the first empty one); ``updated_since`` is the incremental cursor.

    Raises:
        SourceLoadFailed: dlt could not read the API (the message never carries the URL).
    """
    import dlt
    from dlt.sources.rest_api import rest_api_source

    dlt.config["runtime.dlthub_telemetry"] = False
    resources: list[Any] = []
    for spec in source.tables:
        start = cursors.get(spec.name)
        resources.append({
            "name": spec.resource, "primary_key": spec.primary_key,
            "columns": {spec.cursor: {"data_type": "timestamp"}},
            "endpoint": {
                "path": API_PATH.lstrip("/"), "data_selector": "data",
                "params": {"per_page": API_PAGE_SIZE, "updated_since": {
                    "type": "incremental", "cursor_path": spec.cursor,
                    "initial_value": start.astimezone(UTC).isoformat() if start is not None else DEMO_START.isoformat()}},
            },
        })
    try:
        src = rest_api_source({
            "client": {"base_url": base_url.rstrip("/") + "/",
                       # The API answers an empty page past the last: dlt stops there.
                       "paginator": {"type": "page_number", "base_page": 1, "page_param": "page",
                                     "total_path": None}},
            "resource_defaults": {"write_disposition": "append"}, "resources": resources}, name=source.name)
        return _run(dlt, src, source, scratch)
    except Exception as exc:  # as extract_sql: one line, no URL
        if isinstance(exc, AgentLakeError):
            raise
        exc = getattr(exc, "exception", None) or exc
        raise SourceLoadFailed(f"source {source.name}: dlt could not extract it: {type(exc).__name__}: "
                               f"{_scrub(str(exc))}; check that the helpdesk API is up and "
                               "AGENTLAKE_SOURCES_API_URL is right, then load again") from None


def extract_files(folder: Path, source: Source, scratch: Path) -> Extract:
    """Run dlt's ``filesystem`` source over ``folder`` (every file under it), each file read into a document row.

    A file that is not a document (another suffix, too large, not UTF-8, or a link that leads out of
    the folder) is left out and listed in ``skipped`` with its reason; nothing is dropped unsaid.
    Every file is read each load (a folder of documents is small, and a copied file may carry an
    old modification time); the publish keeps only the versions ``ext.documents`` lacks.

    Raises:
        SourceLoadFailed: the folder cannot be read.
    """
    import dlt
    from dlt.sources.filesystem import filesystem

    dlt.config["runtime.dlthub_telemetry"] = False
    if not folder.is_dir():
        raise SourceLoadFailed(f"source {source.name}: the documents folder {folder} does not exist; create it "
                               "(`agentlake sources demo` writes the demo corpus there) or set "
                               "AGENTLAKE_SOURCES_DOCUMENTS_DIR")
    root = folder.resolve()
    skipped: list[dict[str, str]] = []
    (spec,) = source.tables

    @dlt.transformer(name=spec.resource, primary_key=spec.primary_key)
    def documents(items: list[Any]) -> Any:
        for item in items:
            relative = str(item["relative_path"])
            real = (root / relative).resolve()
            if not real.is_relative_to(root):
                skipped.append({"path": relative, "reason": "a link that leads out of the documents folder"})
                continue
            row = document_row(relative, real.read_bytes() if real.is_file() else b"", item["modification_date"])
            if isinstance(row, str):
                skipped.append({"path": relative, "reason": row})
            else:
                yield row

    try:
        listing = filesystem(bucket_url=root.as_uri(), file_glob="**/*")
        extract = _run(dlt, listing | documents, source, scratch)
    except Exception as exc:  # as extract_sql: one line
        if isinstance(exc, AgentLakeError):
            raise
        exc = getattr(exc, "exception", None) or exc
        raise SourceLoadFailed(f"source {source.name}: dlt could not read the documents folder: "
                               f"{type(exc).__name__}: {_scrub(str(exc))}; check the folder, then load again") from None
    extract.skipped = sorted(skipped, key=lambda s: s["path"])
    return extract


def _run(dlt: Any, src: Any, source: Source, scratch: Path) -> Extract:
    pipeline = dlt.pipeline(pipeline_name=f"agentlake_{source.name}", pipelines_dir=str(scratch / "pipelines"),
                            destination=dlt.destinations.filesystem(bucket_url=str(scratch / "stage")),
                            dataset_name=source.name)
    info = pipeline.run(src, loader_file_format="parquet", write_disposition="append")
    load_id = info.loads_ids[0] if info.loads_ids else f"empty-{uuid.uuid4().hex[:12]}"
    rows = {}
    for spec in source.tables:
        files = sorted((scratch / "stage" / source.name / spec.resource).glob("*.parquet"))
        rows[spec.resource] = pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})
    return Extract(load_id, rows)


def _naive(moment: datetime | None) -> datetime | None:
    # SQLite returns naive timestamps (UTC by convention): compare like with like.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


# --- the ext tables -------------------------------------------------------------------------------


def published_cursor(table: Table | None) -> datetime | None:
    """The cursor ``main`` of an ``ext`` table was last published at (none: never loaded)."""
    text = table.properties.get(CURSOR_PROPERTY) if table is not None else None
    return datetime.fromisoformat(text) if text else None


def load_ext_table(catalog: Catalog, spec: ExternalTable) -> Table | None:
    try:
        return catalog.load_table(spec.name)
    except NoSuchTableError:
        return None


def _ensure_table(catalog: Catalog, spec: ExternalTable, schema: pa.Schema) -> Table:
    """The ``ext`` table, created from the first load's columns; later loads' new columns are added."""
    try:
        catalog.create_namespace(NAMESPACE)
    except (NamespaceAlreadyExistsError, IntegrityError):
        pass
    table = load_ext_table(catalog, spec)
    if table is None:
        try:
            table = catalog.create_table(spec.name, schema=schema, properties={
                **TABLE_PROPERTIES, "comment": f"external source table, key {spec.primary_key}"})
        except (TableAlreadyExistsError, IntegrityError):  # another process created it first
            table = catalog.load_table(spec.name)
    current = set(table.schema().as_arrow().names)
    if any(name not in current for name in schema.names):
        with table.update_schema() as update:
            update.union_by_name(schema)
    return table


def _normalise(rows: pa.Table, spec: ExternalTable) -> pa.Table:
    """The load's rows as an ``ext`` table holds them: timestamps in UTC, every column nullable."""
    rows = rows.drop_columns([c for c in DLT_COLUMNS if c in rows.column_names])
    fields = []
    for f in rows.schema:
        kind = f.type
        if pa.types.is_timestamp(kind):
            kind = pa.timestamp("us", tz="UTC")
        elif pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(pa.field(f.name, kind, nullable=True))
    return rows.cast(pa.schema(fields))


def _conform(rows: pa.Table, table: Table) -> pa.Table:
    target = table.schema().as_arrow()
    columns = [rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(len(rows), f.type)
               for f in target]
    return pa.Table.from_arrays(columns, schema=target)


# --- the suite ------------------------------------------------------------------------------------


def source_rules(spec: ExternalTable, max_load_rows: int) -> tuple[Rule, ...]:
    """The rules of an ``ext`` table's suite (names, levels and meanings)."""
    if spec is DOCUMENT_FILES:  # versions of documents, with a suite of their own
        return document_rules()
    return tuple(Rule(name, BATCH, expectation, column, description, frame)
                 for name, expectation, column, description, frame in _rule_list(spec, max_load_rows))


def _rule_list(spec: ExternalTable, max_load_rows: int) -> list[tuple[str, str, str | None, str, str]]:
    key = spec.primary_key
    return [
        (f"{key}_not_null", "ExpectColumnValuesToNotBeNull", key, f"every row has a {key}", "rows"),
        (f"{key}_unique", "ExpectColumnValuesToBeUnique", "key_hash",
         f"{key} is unique in the published table (checked on a 64-bit hash)", "rows"),
        ("row_count_matches_merge", "ExpectTableRowCountToEqual", None,
         "rows = rows before - keys the load replaces or deletes + the load's live keys", "rows"),
        ("cursor_not_backwards", "ExpectColumnValuesToBeBetween", "cursor_advance_s",
         f"the load's latest {spec.cursor} is not before the cursor last published", BATCH_FRAME),
        ("load_rows_within_limit", "ExpectColumnValuesToBeBetween", "load_rows",
         f"a load holds at most {max_load_rows} rows (AGENTLAKE_SOURCES_MAX_LOAD_ROWS)", BATCH_FRAME),
    ]


@functools.cache
def _expectations(spec: ExternalTable, max_load_rows: int) -> ExpectationSuite:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    critical = SEVERITY[BATCH]
    kwargs: dict[str, dict[str, Any]] = {
        "row_count_matches_merge": {"value": {"$PARAMETER": "expected_rows"}},
        "cursor_not_backwards": {"min_value": 0},
        "load_rows_within_limit": {"min_value": 0, "max_value": max_load_rows},
    }
    expectations = []
    for name, expectation, column, description, frame in _rule_list(spec, max_load_rows):
        args = {"column": column} if column else {}
        expectations.append(getattr(gxe, expectation)(
            **args, **kwargs.get(name, {}), severity=critical, description=description,
            meta={"rule": name, "frame": frame}))
    return gx.ExpectationSuite(name=f"agentlake.{spec.name}", expectations=expectations)


# --- write, audit, publish ----------------------------------------------------------------------


def publish_load(
    catalog: Catalog, spec: ExternalTable, rows: pa.Table, *, source: str, load_id: str, run_id: str,
    max_load_rows: int, store: ObjectStore | None = None, check: Callable[[str], None] | None = None,
) -> TableLoad:
    """Write one load of one table on a branch, audit it, and publish it to ``main`` in one commit (or hold it).

    Raises:
        CommitConflict: ``main`` kept moving under every attempt (another load of the same table).
    """
    for attempt in range(1, MAX_PUBLISH_ATTEMPTS + 1):
        try:
            return _publish_once(catalog, spec, rows, source=source, load_id=load_id, run_id=run_id,
                                 max_load_rows=max_load_rows, store=store, check=check or (lambda _: None))
        except MainMoved:
            if attempt == MAX_PUBLISH_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _publish_once(
    catalog: Catalog, spec: ExternalTable, rows: pa.Table, *, source: str, load_id: str, run_id: str,
    max_load_rows: int, store: ObjectStore | None, check: Callable[[str], None],
) -> TableLoad:
    existing = load_ext_table(catalog, spec)
    before = published_cursor(existing)
    outcome = TableLoad(source, spec.name, load_id, rows.num_rows, _iso(before), _iso(before))
    if rows.num_rows == 0:
        outcome.unchanged, outcome.rows = True, _row_count(existing) if existing is not None else 0
        return outcome
    rows = _normalise(rows, spec)
    table = _ensure_table(catalog, spec, rows.schema)
    key, cursor = spec.primary_key, spec.cursor
    # main's keys and cursors, file by file: which rows of the load are new, and which files to rewrite.
    main_files = list(table.scan().plan_files()) if table.current_snapshot() is not None else []
    per_file = [(task.file, _read(table, task.file.file_path, [key, cursor])) for task in main_files]
    on_main = pa.concat_tables([t for _, t in per_file]) if per_file else pa.table(
        {key: pa.array([], pa.string()), cursor: pa.array([], pa.timestamp("us", tz="UTC"))})
    fresh = _newer_than_main(rows, on_main, key, cursor)
    if fresh.num_rows == 0:
        outcome.unchanged, outcome.rows = True, on_main.num_rows
        return outcome
    load_keys = pc.unique(fresh.column(key))
    live = fresh if spec.deleted is None else fresh.filter(pc.invert(pc.fill_null(
        pc.equal(fresh.column(spec.deleted), 1), False)))
    replaced = pc.is_in(on_main.column(key), value_set=load_keys)
    expected = on_main.num_rows - pc.sum(replaced).as_py() if on_main.num_rows else 0
    expected = (expected or 0) + len(pc.unique(live.column(key)))
    after = pc.max(fresh.column(cursor)).as_py()
    outcome.cursor_after = _iso(after)
    state = {SOURCE_PROPERTY: source, "agentlake.dlt.load-id": load_id, "agentlake.run-id": run_id,
             "agentlake.source.cursor-before": outcome.cursor_before or "",
             "agentlake.source.cursor-after": outcome.cursor_after or "",
             "agentlake.source.rows-loaded": str(fresh.num_rows),
             "agentlake.source.rows-deleted": str(fresh.num_rows - live.num_rows)}
    branch, head = _stage(table, per_file, load_keys, live, key, state)
    check(f"after-stage:{spec.name}")
    audit = _audit(table, spec, head, expected=expected, before=before, after=after, load_rows=fresh.num_rows,
                   max_load_rows=max_load_rows)
    gate = GateOutcome(spec.name, branch, head, audit)
    if store is not None:
        gate.validation = keep_validation(store, spec.name, head, audit, {"branch": branch, "run_id": run_id,
                                                                          "load_id": load_id})
    outcome.gate = gate
    if not audit.passed:
        record: dict[str, Any] = {"run_id": run_id, "source": source, "failed": audit.batch_failures,
                                  "rows": fresh.num_rows,
                                  "audit": [r.as_dict() for r in audit.results if not r.passed]}
        if gate.validation is not None:
            record["validation_result"] = gate.validation.result_key
        hold(table, HELD_DAY, _staged(table, branch, head), [load_id], record)
        gate.held = outcome.held = True
        outcome.cursor_after = outcome.cursor_before
        return outcome
    earlier = {v["branch"] for v in held(table.properties, HELD_DAY).values()}

    def properties(fresh_table: Table) -> tuple[dict[str, str], tuple[str, ...]]:
        # A published load supersedes held ones: the rows they held are extracted again from the cursor.
        remove = (f"agentlake.held.{HELD_DAY}",) if held(fresh_table.properties, HELD_DAY) else ()
        return {CURSOR_PROPERTY: outcome.cursor_after or "", LOAD_ID_PROPERTY: load_id, SOURCE_PROPERTY: source}, remove

    gate.published_snapshot_id = outcome.published_snapshot_id = publish(
        table, _staged(table, branch, head), properties, snapshot_properties=state, check=check,
        still_wanted=lambda fresh_table: fresh_table.properties.get(LOAD_ID_PROPERTY) != load_id)
    for old in sorted(earlier):
        discard(table, old)
    outcome.rows = expected
    return outcome


def _newer_than_main(rows: pa.Table, on_main: pa.Table, key: str, cursor: str) -> pa.Table:
    """The load's rows whose key ``main`` does not hold at a cursor as recent (dlt's start is inclusive)."""
    if on_main.num_rows == 0:
        return rows
    load = pl.from_arrow(rows.select([key, cursor]))
    main = pl.from_arrow(on_main)
    assert isinstance(load, pl.DataFrame) and isinstance(main, pl.DataFrame)
    seen = load.with_row_index("_row").join(main.rename({cursor: "_main_cursor"}), on=key, how="left")
    keep = seen.filter(pl.col("_main_cursor").is_null() | (pl.col(cursor) > pl.col("_main_cursor")))["_row"]
    return rows.take(pa.array(keep.sort().to_list(), pa.int64()))


def _stage(
    table: Table, per_file: list[tuple[Any, pa.Table]], load_keys: pa.Array, live: pa.Table, key: str,
    state: dict[str, str],
) -> tuple[str, int]:
    """The merge on a new branch at ``main``'s head, in one snapshot; returns the branch and its head."""
    if table.metadata.current_snapshot_id is None:
        # Iceberg branches start at a snapshot: main starts with an empty one (an empty table before and after).
        with table.transaction() as tx, tx.update_snapshot(
                snapshot_properties={"agentlake.empty-start": "true"}).fast_append():
            pass
    removed, kept = [], []
    for data_file, keys in per_file:
        mask = pc.is_in(keys.column(key), value_set=load_keys)
        if not pc.any(mask).as_py():
            continue
        removed.append(data_file)
        rows = _read(table, data_file.file_path)
        kept.append(rows.filter(pc.invert(pc.is_in(rows.column(key), value_set=load_keys))))
    parts = [p for p in [*kept, _conform(live, table)] if p.num_rows]
    data = pa.concat_tables([_conform(p, table) for p in parts]) if parts else None
    added = list(_dataframe_to_data_files(table_metadata=table.metadata, df=data, io=table.io)) if data else []
    branch = f"agentlake.staged.{state['agentlake.run-id']}.sources.{uuid.uuid4().hex[:8]}"
    branch = "".join(c if c.isalnum() or c in "-_." else "-" for c in branch)
    base = table.metadata.current_snapshot_id
    assert base is not None
    with table.transaction() as tx:
        with ManageSnapshots(tx) as refs:
            refs.create_branch(base, branch)
        producer = tx.update_snapshot(snapshot_properties={**state, "agentlake.staged": "true"}, branch=branch)
        if removed:
            with producer.overwrite() as ow:
                for data_file in removed:
                    ow.delete_data_file(data_file)
                for data_file in added:
                    ow.append_data_file(data_file)
        else:
            with producer.fast_append() as append:
                for data_file in added:
                    append.append_data_file(data_file)
    return branch, table.metadata.refs[branch].snapshot_id


def _staged(table: Table, branch: str, head: int) -> Any:
    from agentlake.gate.publish import Staged

    snapshot = table.metadata.snapshot_by_id(head)
    assert snapshot is not None and snapshot.parent_snapshot_id is not None
    return Staged(".".join(table.name()), branch, snapshot.parent_snapshot_id, head)


def _audit(
    table: Table, spec: ExternalTable, head: int, *, expected: int, before: datetime | None, after: datetime | None,
    load_rows: int, max_load_rows: int,
) -> AuditResult:
    """The suite on what the branch holds (its keys) and on the load's figures."""
    keys = table.scan(snapshot_id=head, selected_fields=(spec.primary_key,)).to_arrow()
    frame = pl.from_arrow(keys)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.col(spec.primary_key).hash(seed=11).alias("key_hash"))
    advance = (after - before).total_seconds() if before is not None and after is not None else 0.0
    suite = Suite(spec.name, _expectations(spec, max_load_rows), {"expected_rows": expected})
    return validate(suite, frame, {"cursor_advance_s": advance, "load_rows": load_rows})


def _read(table: Table, path: str, columns: list[str] | None = None) -> pa.Table:
    with table.io.new_input(path).open() as handle:
        return pq.read_table(handle, columns=columns)


def _row_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-records", "0"))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# --- loading ------------------------------------------------------------------------------------


def source_url(settings: Settings, source: Source) -> str:
    """The SQLAlchemy URL a source is read from (unwrapped here, for dlt only).

    Raises:
        ConfigError: the demo database is wanted but was never created.
    """
    if settings.sources_sql_url is None:
        path = settings.sources_home / "helpdesk.db"
        if not path.exists():
            raise ConfigError(f"source {source.name}: the demo helpdesk database {path} does not exist; create it "
                              "with `agentlake sources demo` or set AGENTLAKE_SOURCES_SQL_URL")
    return settings.resolved_sources_sql_url


def api_url(settings: Settings, source: Source) -> str:
    """The base URL a REST source is read from (unwrapped here, for dlt only).

    Raises:
        ConfigError: the source's URL is not set.
    """
    if settings.sources_api_url is None:
        raise ConfigError(f"source {source.name}: AGENTLAKE_SOURCES_API_URL is not set; set it to the helpdesk "
                          "API's base URL (`make run` serves the demo's)")
    return settings.sources_api_url.get_secret_value()


def load(
    lake: Lake, names: list[str] | None = None, *, run_id: str | None = None,
    check: Callable[[str], None] | None = None,
) -> list[TableLoad]:
    """Extract each named source (all by default) with dlt and publish its tables through the gate.

    Raises:
        UnknownSource: a name that is not configured.
        SourceLoadFailed: dlt could not extract a source.
    """
    run_id = run_id or f"sources-{uuid.uuid4().hex[:12]}"
    out: list[TableLoad] = []
    scratch_root = lake.settings.sources_home / "loads"
    scratch_root.mkdir(parents=True, exist_ok=True)
    for source in sources(names, lake.settings):
        cursors = {spec.name: published_cursor(load_ext_table(lake.catalog, spec)) for spec in source.tables}
        with tempfile.TemporaryDirectory(dir=scratch_root, prefix=f"{source.name}-") as scratch:
            if source.kind == "files":
                folder = lake.settings.documents_dir
                if lake.settings.sources_documents_dir is None and not folder.exists():
                    # The default folder not made yet (`make run` and `sources demo` make it): nothing to load.
                    extract = Extract(f"empty-{uuid.uuid4().hex[:12]}", {source.tables[0].resource: pa.table({})},
                                      [{"path": str(folder), "reason": "the documents folder does not exist yet"}])
                else:
                    extract = extract_files(folder, source, Path(scratch))
                out.append(publish_documents(lake, extract, source=source.name, run_id=run_id))
                continue
            if source.kind == "rest":
                extract = extract_rest(api_url(lake.settings, source), source, cursors, Path(scratch))
            else:
                extract = extract_sql(source_url(lake.settings, source), source, cursors, Path(scratch))
        for spec in source.tables:
            out.append(publish_load(lake.catalog, spec, extract.rows[spec.resource], source=source.name,
                                    load_id=extract.load_id, run_id=run_id,
                                    max_load_rows=lake.settings.sources_max_load_rows, store=lake.store, check=check))
    return out


def publish_documents(lake: Lake, extract: Extract, *, source: str, run_id: str) -> TableLoad:
    """Publish a files load into ``ext.documents`` through its suite: the versions it lacks, in one commit."""
    (spec,) = SOURCES[source].tables
    rows = extract.rows[spec.resource]
    before = published_cursor(load_ext_table(lake.catalog, spec))
    outcome = TableLoad(source, spec.name, extract.load_id, rows.num_rows, _iso(before), _iso(before),
                        skipped=extract.skipped)
    if rows.num_rows:
        rows = _normalise(rows, spec).select([name for name, *_ in spec.columns])
        rows = rows.cast(pa.schema([pa.field(f.name, f.type, nullable=True) for f in DOCUMENT_FILES.arrow_schema()]))
        newest = pc.max(rows.column(spec.cursor)).as_py()
        outcome.cursor_after = _iso(max(newest, before) if before is not None else newest)
    state = {SOURCE_PROPERTY: source, "agentlake.dlt.load-id": extract.load_id, "agentlake.run-id": run_id,
             "agentlake.source.cursor-before": outcome.cursor_before or "",
             "agentlake.source.cursor-after": outcome.cursor_after or "",
             "agentlake.source.files-skipped": str(len(extract.skipped))}
    properties = {CURSOR_PROPERTY: outcome.cursor_after or "", LOAD_ID_PROPERTY: extract.load_id,
                  SOURCE_PROPERTY: source}
    try:
        result = load_documents(lake, rows, run_id=run_id, load_id=extract.load_id, table_properties=properties,
                                snapshot_state=state) if rows.num_rows else None
    except DocumentsHeld as exc:
        outcome.gate, outcome.held, outcome.cursor_after = exc.outcome.gate, True, outcome.cursor_before
        outcome.rows = _row_count(lake.catalog.load_table(spec.name))
        return outcome
    if result is None or result.added == 0:
        outcome.unchanged = True
    else:
        outcome.gate, outcome.published_snapshot_id = result.gate, result.snapshot_id
    table = load_ext_table(lake.catalog, spec)
    outcome.rows = _row_count(table) if table is not None else 0
    return outcome


def describe(lake: Lake) -> list[dict[str, Any]]:
    """Each configured source's tables: last load, rows, snapshot, cursor, held loads (``sources ls``)."""
    out = []
    for source in configured(lake.settings):
        for spec in source.tables:
            table = load_ext_table(lake.catalog, spec)
            snapshot = table.current_snapshot() if table is not None else None
            held_loads = held(table.properties, HELD_DAY) if table is not None else {}
            out.append({
                "source": source.name, "kind": source.kind, "table": spec.name, "key": spec.primary_key,
                "cursor_column": spec.cursor,
                "last_load_id": table.properties.get(LOAD_ID_PROPERTY) if table is not None else None,
                "cursor": table.properties.get(CURSOR_PROPERTY) if table is not None else None,
                "rows": _row_count(table) if table is not None else 0,
                "snapshot_id": snapshot.snapshot_id if snapshot is not None else None,
                "held_loads": sorted(held_loads),
                "held_failed": sorted({r for v in held_loads.values() for r in v.get("failed", [])}),
            })
    return out


def held_loads(table: Table) -> dict[str, dict[str, Any]]:
    """The loads of an ``ext`` table held by its suite: load id -> branch, snapshot, failed rules."""
    return held(table.properties, HELD_DAY)


def gate_results(lake: Lake, source: Source) -> list[tuple[ExternalTable, Rule, dict[str, Any] | None]]:
    """Each rule of each of a source's tables, with the held load it failed (None: the rule holds).

    A published load clears the held records, so a record still there is a later load the rule held.
    """
    out = []
    for spec in source.tables:
        table = load_ext_table(lake.catalog, spec)
        loads = held_loads(table) if table is not None else {}
        for rule in source_rules(spec, lake.settings.sources_max_load_rows):
            failing = next(({"load_id": load_id, **record} for load_id, record in sorted(loads.items())
                            if rule.name in record.get("failed", [])), None)
            out.append((spec, rule, failing))
    return out


def declared_dlt_source(source: Source) -> Any:
    """The source as dlt declares it, with no connection made: its resources with key, cursor and merge hints.

    What an orchestrator lists (one asset per resource); a load builds the real dlt source
    (:func:`extract_sql`) from the configured URL only when it runs.
    """
    import dlt

    def declared(spec: ExternalTable) -> Any:
        def rows() -> Any:
            yield from ()

        return dlt.resource(rows, name=spec.resource, primary_key=spec.primary_key, write_disposition="merge",
                            incremental=dlt.sources.incremental(spec.cursor))

    return dlt.source(name=source.name)(lambda: [declared(spec) for spec in source.tables])()
