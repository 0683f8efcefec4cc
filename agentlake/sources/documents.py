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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa

from agentlake.errors import AgentLakeError
from agentlake.gate.publish import AlreadyPublished, branch_name, publish, stage
from agentlake.gate.suites import BATCH, SEVERITY, Suite, validate
from agentlake.tables.files import write_files
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import DOCUMENTS, ensure_tables

DOCS_PER_SOURCE = 24
# When the corpus was written: fixed, so that the same corpus gives the same rows and hashes.
CORPUS_TIME = datetime(2026, 1, 5, tzinfo=UTC)
SUITE_NAME = "agentlake.ext.documents"


class DocumentsHeld(AgentLakeError):
    """The document batch failed its audit and was not published; its rows stay on the staging branch."""


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


@functools.cache
def documents_suite() -> Suite:
    """The batch rules a load of documents is held to: a failure publishes nothing."""
    import great_expectations as gx
    import great_expectations.expectations

    gxe: Any = great_expectations.expectations  # severities are given by name, as in the other suites
    batch = SEVERITY[BATCH]
    return Suite(DOCUMENTS.name, gx.ExpectationSuite(name=SUITE_NAME, expectations=[
        gxe.ExpectColumnValuesToNotBeNull(column="doc_id", severity=batch, description="every row has a doc_id",
                                          meta={"rule": "doc_id_not_null"}),
        gxe.ExpectColumnValuesToBeUnique(column="doc_id", severity=batch,
                                         description="one row per document in the batch",
                                         meta={"rule": "doc_id_unique"}),
        gxe.ExpectColumnValuesToBeInSet(column="hash_matches", value_set=[True], severity=batch,
                                        description="every content_hash is the sha256 of its body",
                                        meta={"rule": "content_hash_matches_body"}),
    ]))


def _audit_frame(rows: pa.Table) -> pl.DataFrame:
    bodies = rows.column("body").to_pylist()
    hashes = rows.column("content_hash").to_pylist()
    return pl.DataFrame({
        "doc_id": rows.column("doc_id").to_pylist(),
        "hash_matches": [hashlib.sha256(b.encode()).hexdigest() == h for b, h in zip(bodies, hashes, strict=True)],
    })


@dataclass
class DocumentsLoad:
    """What a load did."""

    documents: int
    added: int
    snapshot_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "added": self.added, "snapshot_id": self.snapshot_id}


def _on_main(table: Any) -> set[tuple[str, str]]:
    if table.current_snapshot() is None:
        return set()
    held = table.scan(selected_fields=("doc_id", "content_hash")).to_arrow()
    return set(zip(held.column("doc_id").to_pylist(), held.column("content_hash").to_pylist(), strict=True))


def load_documents(lake: Lake, rows: pa.Table, *, run_id: str = "documents-load") -> DocumentsLoad:
    """Publish the rows ``ext.documents`` does not hold yet, through staging and the documents suite.

    Raises:
        DocumentsHeld: the batch broke a rule; nothing was published, the branch is kept for inspection.
    """
    table = ensure_tables(lake.catalog, [DOCUMENTS])[DOCUMENTS.name]
    there = _on_main(table)
    keys = zip(rows.column("doc_id").to_pylist(), rows.column("content_hash").to_pylist(), strict=True)
    new = rows.filter(pa.array([k not in there for k in keys], pa.bool_()))
    snapshot = table.current_snapshot()
    if new.num_rows == 0:
        return DocumentsLoad(rows.num_rows, 0, snapshot.snapshot_id if snapshot else None)
    properties = {"agentlake.run-id": run_id, "agentlake.documents": str(new.num_rows)}
    files = write_files(table, DOCUMENTS, [new])
    staged = stage(table, files, branch_name(run_id, CORPUS_TIME.date().isoformat()), properties)
    audit = validate(documents_suite(), _audit_frame(new))
    if not audit.passed:
        raise DocumentsHeld(
            f"{DOCUMENTS.name}: the batch of {new.num_rows} documents broke {', '.join(audit.batch_failures)}; "
            f"nothing was published and it stays on branch {staged.branch}: fix the documents and load them again"
        )

    def still_wanted(fresh: Any) -> bool:
        return not _on_main(fresh) >= set(zip(new.column("doc_id").to_pylist(),
                                              new.column("content_hash").to_pylist(), strict=True))

    try:
        snapshot_id = publish(table, staged, lambda _t: ({}, ()), properties, lambda _point: None, still_wanted)
    except AlreadyPublished:  # another process loaded the same documents first: they are there
        table.refresh()
        current = table.current_snapshot()
        return DocumentsLoad(rows.num_rows, 0, current.snapshot_id if current else None)
    return DocumentsLoad(rows.num_rows, new.num_rows, snapshot_id)
