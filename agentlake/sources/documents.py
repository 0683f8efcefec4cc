"""The demo document corpus and its loader into ``ext.documents``, through the quality gate.

The corpus is deterministic: each retrieval source of the demo fleet (``kb-articles``,
``past-tickets``, ``web-index``, ...) holds :data:`DOCS_PER_SOURCE` markdown documents, each about
one topic, which is one of the decision labels of the agent kind that reads that source. Document
ids are ``<source>/<six digits>``, what a ``retrieval`` event names.

Loading is write-audit-publish like ingest: the rows ``main`` does not hold yet (by ``doc_id`` and
``content_hash``) are committed to a staging branch, validated by a Great Expectations suite
(ids present and unique, each ``content_hash`` the sha256 of its body), and only then published.
Loading again finds every row there and commits nothing. The table's schema is
:data:`agentlake.tables.schemas.DOCUMENTS`; other loaders (dlt) may write the same columns.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import pyarrow as pa

from agentlake.errors import AgentLakeError
from agentlake.gate.batch import GateOutcome
from agentlake.gate.publish import (
    HELD_PREFIX,
    AlreadyPublished,
    branch_name,
    discard,
    held,
    hold,
    publish,
    stage,
)
from agentlake.gate.suites import BATCH, SEVERITY, Rule, Suite, validate
from agentlake.tables.files import write_files
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import DOCUMENTS, ensure_tables

DOCS_PER_SOURCE = 24
# When the corpus was written: fixed, so that the same corpus gives the same rows and hashes.
CORPUS_TIME = datetime(2026, 1, 5, tzinfo=UTC)
SUITE_NAME = "agentlake.ext.documents"
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")
MAX_DOCUMENT_BYTES = 1 << 20
HELD_DAY = "sources"  # a held load from a source is recorded as the other ext tables record theirs


@dataclass(frozen=True)
class Document:
    """One document of the corpus."""

    doc_id: str
    source: str
    topic: str
    title: str
    body: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()


def _paragraph(source: str, topic: str, i: int) -> str:
    words = topic.replace("_", " ")
    return (f"This {source.rstrip('s').replace('-', ' ')} covers cases that end in **{words}**. "
            f"Case {i:02d}: check the history of the tenant first; most requests of this kind "
            f"were settled by {words} within a day.")


def doc_id(source: str, index: int) -> str:
    """The id of the ``index``-th document of ``source``."""
    return f"{source}/{index % DOCS_PER_SOURCE:06d}"


def topic_of(topics: Sequence[str], index: int) -> str:
    """The topic of the ``index``-th document of a source whose reader decides among ``topics``."""
    return topics[(index % DOCS_PER_SOURCE) % len(topics)]


def corpus(sources: Mapping[str, Sequence[str]]) -> list[Document]:
    """The documents of each source, ``{source: the decision labels of its reader}``, in id order."""
    docs = []
    for source, topics in sorted(sources.items()):
        for i in range(DOCS_PER_SOURCE):
            topic = topic_of(topics, i)
            title = f"{source} {i:02d}: when to choose {topic.replace('_', ' ')}"
            body = (f"# {title}\n\ntopic: {topic}\n\n{_paragraph(source, topic, i)}\n\n"
                    f"- source: {source}\n- revision: 1\n")
            docs.append(Document(doc_id(source, i), source, topic, title, body))
    return docs


def rows_of(docs: Sequence[Document]) -> pa.Table:
    """The documents as rows of ``ext.documents``."""
    return pa.Table.from_pylist(
        [{"doc_id": d.doc_id, "title": d.title, "body": d.body, "content_hash": d.content_hash,
          "updated_at": CORPUS_TIME} for d in docs],
        schema=DOCUMENTS.arrow_schema(),
    )


def write_corpus(folder: Path, docs: Sequence[Document]) -> int:
    """Write the corpus into ``folder`` as files (``<doc_id>.md``), leaving any file already there alone.

    Each file's modification time is :data:`CORPUS_TIME`, so a load of the folder gives the rows
    :func:`rows_of` gives. Returns how many files were written.
    """
    written = 0
    for doc in docs:
        path = folder / f"{doc.doc_id}.md"
        if path.exists():
            continue  # somebody's edit is a new version for the next load, never overwritten here
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".writing")
        partial.write_text(doc.body, encoding="utf-8")
        os.utime(partial, (CORPUS_TIME.timestamp(), CORPUS_TIME.timestamp()))
        partial.replace(path)
        written += 1
    return written


def document_row(relative_path: str, data: bytes, modified: datetime) -> dict[str, Any] | str:
    """The ``ext.documents`` row of one file of a documents folder, or why the file is not a document.

    The id is the path under the folder without its suffix (``kb-articles/000012.md`` is
    ``kb-articles/000012``); the title is the first line, a markdown heading's marks taken off.
    Only markdown and text files of at most :data:`MAX_DOCUMENT_BYTES`, in UTF-8, are documents.
    """
    path = PurePosixPath(relative_path)
    if path.suffix.lower() not in DOCUMENT_SUFFIXES:
        return f"not a document ({path.suffix or 'no suffix'}; the documents are {', '.join(DOCUMENT_SUFFIXES)})"
    if path.is_absolute() or ".." in path.parts or not path.stem:
        return "its path leaves the documents folder"
    if len(data) > MAX_DOCUMENT_BYTES:
        return f"{len(data)} bytes, more than the {MAX_DOCUMENT_BYTES} a document may hold"
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start})"
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    return {"doc_id": str(path.with_suffix("")), "title": first.lstrip("#").strip()[:300] or path.stem, "body": body,
            "content_hash": hashlib.sha256(body.encode()).hexdigest(), "updated_at": modified.astimezone(UTC)}


# (name, expectation, column, description): every rule holds the batch (nothing publishes when one fails).
_RULES = (
    ("doc_id_not_null", "ExpectColumnValuesToNotBeNull", "doc_id", "every row has a doc_id"),
    ("doc_id_unique", "ExpectColumnValuesToBeUnique", "doc_id", "one row per document in the batch"),
    ("content_hash_matches_body", "ExpectColumnValuesToBeInSet", "hash_matches",
     "every content_hash is the sha256 of its body"),
)


def document_rules() -> tuple[Rule, ...]:
    """The rules of the documents suite (names, levels and meanings), without importing Great Expectations."""
    return tuple(Rule(name, BATCH, expectation, column, description) for name, expectation, column, description in _RULES)


@functools.cache
def documents_suite() -> Suite:
    """The batch rules a load of documents is held to: a failure publishes nothing."""
    import great_expectations as gx
    import great_expectations.expectations

    gxe: Any = great_expectations.expectations  # severities are given by name, as in the other suites
    batch = SEVERITY[BATCH]
    extra = {"content_hash_matches_body": {"value_set": [True]}}
    return Suite(DOCUMENTS.name, gx.ExpectationSuite(name=SUITE_NAME, expectations=[
        getattr(gxe, expectation)(column=column, **extra.get(name, {}), severity=batch, description=description,
                                  meta={"rule": name})
        for name, expectation, column, description in _RULES]))


def _audit_frame(rows: pa.Table) -> pl.DataFrame:
    bodies = rows.column("body").to_pylist()
    hashes = rows.column("content_hash").to_pylist()
    return pl.DataFrame({
        "doc_id": rows.column("doc_id").to_pylist(),
        "hash_matches": [hashlib.sha256(b.encode()).hexdigest() == h for b, h in zip(bodies, hashes, strict=True)],
    })


@dataclass
class DocumentsLoad:
    """What a load did: how many documents it brought, how many were new versions, where ``main`` is."""

    documents: int
    added: int
    snapshot_id: int | None
    gate: GateOutcome | None = field(default=None, repr=False)  # None: nothing new, nothing audited

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "added": self.added, "snapshot_id": self.snapshot_id}


class DocumentsHeld(AgentLakeError):
    """The document batch failed its audit and was not published; its rows stay on the staging branch."""

    def __init__(self, message: str, outcome: DocumentsLoad) -> None:
        super().__init__(message)
        self.outcome = outcome


def _on_main(table: Any) -> set[tuple[str, str]]:
    if table.current_snapshot() is None:
        return set()
    held_rows = table.scan(selected_fields=("doc_id", "content_hash")).to_arrow()
    return set(zip(held_rows.column("doc_id").to_pylist(), held_rows.column("content_hash").to_pylist(), strict=True))


def _clear_held(table: Any) -> None:
    """Remove the held record of earlier loads and their staging branches (a clean load supersedes them)."""
    branches = {v["branch"] for v in held(table.properties, HELD_DAY).values()}
    with table.transaction() as tx:
        tx.remove_properties(f"{HELD_PREFIX}{HELD_DAY}")
    for branch in sorted(branches):
        discard(table, branch)


def load_documents(
    lake: Lake, rows: pa.Table, *, run_id: str = "documents-load", load_id: str | None = None,
    table_properties: dict[str, str] | None = None, snapshot_state: dict[str, str] | None = None,
) -> DocumentsLoad:
    """Publish the rows ``ext.documents`` does not hold yet, through staging and the documents suite.

    A load from a source (``load_id``) is recorded as held in the table properties when it fails
    (``agentlake.held.sources``, as the other ``ext`` tables record theirs), and its publish sets
    ``table_properties`` and clears earlier held records in the same commit; ``snapshot_state`` goes
    into the published snapshot's summary (the dlt load id, the source state).

    Raises:
        DocumentsHeld: the batch broke a rule; nothing was published, the branch is kept for inspection.
    """
    table = ensure_tables(lake.catalog, [DOCUMENTS])[DOCUMENTS.name]
    there = _on_main(table)
    keys = zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist(), strict=True)
    new = rows.filter(pa.array([k not in there for k in keys], pa.bool_()))
    snapshot = table.current_snapshot()
    if new.num_rows == 0:
        if load_id is not None and held(table.properties, HELD_DAY):
            _clear_held(table)  # the folder is whole again, and main holds every document of it
        return DocumentsLoad(rows.num_rows, 0, snapshot.snapshot_id if snapshot else None)
    properties = {"agentlake.run-id": run_id, "agentlake.documents": str(new.num_rows), **(snapshot_state or {})}
    files = write_files(table, DOCUMENTS, [new])
    staged = stage(table, files, branch_name(run_id, CORPUS_TIME.date().isoformat()), properties)
    audit = validate(documents_suite(), _audit_frame(rows))  # the whole load: two files of one id break it
    gate = GateOutcome(DOCUMENTS.name, staged.branch, staged.snapshot_id, audit)
    if not audit.passed:
        gate.held = True
        if load_id is not None:
            hold(table, HELD_DAY, staged, [load_id], {"run_id": run_id, "failed": audit.batch_failures,
                                                      "rows": new.num_rows,
                                                      "audit": [r.as_dict() for r in audit.results if not r.passed]})
        raise DocumentsHeld(
            f"{DOCUMENTS.name}: the batch of {new.num_rows} documents broke {', '.join(audit.batch_failures)}; "
            f"nothing was published and it stays on branch {staged.branch}: fix the documents and load them again",
            DocumentsLoad(rows.num_rows, 0, snapshot.snapshot_id if snapshot else None, gate))
    earlier = {v["branch"] for v in held(table.properties, HELD_DAY).values()} if load_id is not None else set()

    def still_wanted(fresh: Any) -> bool:
        return not _on_main(fresh) >= set(zip(new.column("doc_id").to_pylist(),
                                              new.column("content_hash").to_pylist(), strict=True))

    def set_properties(fresh: Any) -> tuple[dict[str, str], tuple[str, ...]]:
        clear = (f"{HELD_PREFIX}{HELD_DAY}",) if load_id is not None and held(fresh.properties, HELD_DAY) else ()
        return dict(table_properties or {}), clear

    try:
        snapshot_id = publish(table, staged, set_properties, properties, lambda _point: None, still_wanted)
    except AlreadyPublished:  # another process loaded the same documents first: they are there
        table.refresh()
        current = table.current_snapshot()
        return DocumentsLoad(rows.num_rows, 0, current.snapshot_id if current else None)
    for branch in sorted(earlier):
        discard(table, branch)
    gate.published_snapshot_id = snapshot_id
    return DocumentsLoad(rows.num_rows, new.num_rows, snapshot_id, gate)
