"""Validation results kept beside the staged snapshots they audited, with their Data Docs pages.

For each staged snapshot the gate audited, two write-once objects in the store:

- ``audit/v1/validations/<table>/<snapshot id>.json``: the Great Expectations
  ``ExpectationSuiteValidationResult`` of the whole suite, as GX serialises it (``to_json_dict``),
  with the table, branch and snapshot in its ``meta``;
- ``audit/v1/data_docs/<table>/<snapshot id>.html``: its Data Docs page, rendered by GX's own
  validation-results renderer, the page ``build_data_docs`` would write for it. Rendering takes
  about 0.4 s, so it is not done on the way to ``main``: :func:`write_data_docs` renders the pages
  once the run has published (the ingest asset and the CLI call it after the stage).

The snapshot id is random and never reused, so write-once keys never collide; a crash between the
audit and the publish leaves the result of a staged batch that was never published, still
inspectable beside its branch.

With ``AGENTLAKE_SIGNING_KEY`` set, a result carries a signature (:mod:`agentlake.storage.signing`), and
:func:`read_validation` refuses one that does not prove it is AgentLake's (``UntrustedRecord``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr

from agentlake.config import Settings
from agentlake.errors import AlreadyExists, UntrustedRecord
from agentlake.gate.suites import AuditResult
from agentlake.storage.signing import record_problem, signed
from agentlake.storage.store import ObjectStore

VALIDATIONS = "audit/v1/validations/"
DATA_DOCS = "audit/v1/data_docs/"


@dataclass(frozen=True)
class KeptValidation:
    """Where one audit's validation result and its Data Docs page are kept."""

    result_key: str
    page_key: str
    result_uri: str
    page_uri: str


def validation_key(table: str, snapshot_id: int) -> str:
    return f"{VALIDATIONS}{table}/{snapshot_id}.json"


def data_docs_key(table: str, snapshot_id: int) -> str:
    return f"{DATA_DOCS}{table}/{snapshot_id}.html"


def keep_validation(
    store: ObjectStore, table: str, snapshot_id: int, audit: AuditResult, meta: dict[str, Any],
    signing_key: SecretStr | None = None,
) -> KeptValidation:
    """Write ``audit``'s validation result (signed with ``signing_key``, if given) beside the staged snapshot
    ``snapshot_id``; its Data Docs page is rendered later (:func:`write_data_docs`)."""
    validation = audit.validation
    assert validation is not None, "keep_validation needs the result of validate()"
    validation.meta = {**(validation.meta or {}), "table": table, "staged_snapshot_id": str(snapshot_id), **meta}  # type: ignore[typeddict-item]
    result_key, page_key = validation_key(table, snapshot_id), data_docs_key(table, snapshot_id)
    result = signed(signing_key, validation.to_json_dict())
    store.put_once(result_key, orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return KeptValidation(result_key, page_key, store.uri(result_key), store.uri(page_key))


def write_data_docs(store: ObjectStore, audits: list[tuple[KeptValidation | None, AuditResult]]) -> int:
    """Render the Data Docs page of each kept validation not rendered yet; returns how many were written."""
    written = 0
    for kept, audit in audits:
        if kept is None or audit.validation is None:
            continue
        try:
            store.put_once(kept.page_key, data_docs_page(audit.validation).encode())
            written += 1
        except AlreadyExists:
            continue  # rendered by an earlier attempt: pages are write-once like the results
    return written


def data_docs_page(validation: Any) -> str:
    """The Data Docs HTML page of one ``ExpectationSuiteValidationResult``."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return str(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation)))


def read_validation(
    store: ObjectStore, table: str, snapshot_id: int, settings: Settings | None = None
) -> dict[str, Any]:
    """The kept validation result of staged snapshot ``snapshot_id`` of ``table``, as GX wrote it.

    Raises:
        UntrustedRecord: with ``settings``' signing key set, the result does not prove it is AgentLake's.
    """
    return read_validation_at(store, validation_key(table, snapshot_id), settings)


def read_validation_at(store: ObjectStore, key: str, settings: Settings | None = None) -> dict[str, Any]:
    """The kept validation result at ``key`` (see :func:`read_validation`)."""
    data: dict[str, Any] = orjson.loads(store.get(key))
    problem = record_problem(settings, data) if settings is not None else None
    if problem is not None:
        raise UntrustedRecord(f"validation result {key!r} is not AgentLake's: {problem}; do not rely on it, "
                              "and re-run the audit (`agentlake ingest`) to get one AgentLake signed", key)
    return data
