"""Evaluation datasets: a named, pinned query over the tables, kept write-once like a context artifact.

Creating a dataset resolves the current snapshot of every table its SQL reads, pins them, runs
the SQL at exactly those snapshots in the sandbox (:mod:`agentlake.context.sandbox`: one read-only
``SELECT`` over the lake's tables) and writes, write-once and content-addressed:

    datasets/v1/records/<sha256 of the file>.parquet     the rows
    datasets/v1/<name>/<created>-<digest>.json           the version's manifest: SQL, pins, rows, hash

A dataset version is named by its manifest (``<name>@<created>-<digest>``), so an experiment
names the exact rows it ran on; :func:`load_dataset` checks the rows against their hash, and
:func:`rerun_dataset` re-executes the SQL at the pins to show the same rows come back.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from agentlake.context.assembly import (
    ContextEngine,
    ContextRequest,
    platform_version,
    records_hash,
    schema_of,
)
from agentlake.context.pins import pin_snapshots, retention_ms
from agentlake.context.query import resolve
from agentlake.errors import AlreadyExists, ObjectNotFound
from agentlake.eval.evaluate import EvalError
from agentlake.storage.signing import signed
from agentlake.tables.lake import Lake

DATASET_PREFIX = "datasets/v1"
DATASET_FORMAT = "agentlake.dataset/1"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class UnknownDataset(EvalError):
    """No dataset (version) of that name: list them with `agentlake eval dataset ls`."""


class DatasetTampered(EvalError):
    """A dataset's file does not hash to what its manifest records: its rows can no longer be trusted."""


@dataclass
class Dataset:
    """A dataset version: its manifest and (once loaded) its rows."""

    key: str
    manifest: dict[str, Any]
    records: pa.Table | None = None

    @property
    def version(self) -> str:
        return f"{self.manifest['name']}@{self.key.rsplit('/', 1)[-1].removesuffix('.json')}"

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": m["name"], "version": self.version, "key": self.key, "created_at": m["created_at"],
                "rows": m["rows"], "records_hash": m["records_hash"], "pins": m["pins"], "sql": m["sql"]}


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise EvalError(f"{name!r} is not a dataset name: use 1-64 lower-case letters, digits, '_', '.' or '-', "
                        "starting with a letter or digit")


def create_dataset(lake: Lake, name: str, sql: str, *, now: datetime | None = None,
                   engine: ContextEngine | None = None) -> Dataset:
    """Run ``sql`` at the current snapshots, pin them, and keep the rows as a new version of dataset ``name``.

    Raises:
        InvalidRequest: the SQL is not one read-only query over the lake's tables, or it fails.
        EvalError: the name is not one.
    """
    check_name(name)
    request = ContextRequest.from_sql(sql)
    created = now or datetime.now(UTC)
    tables = request.tables()
    pins, _ = resolve(lake, tables)
    pin_snapshots(lake, pins, created_ms=int(created.timestamp() * 1000),
                  retention=retention_ms(lake.settings.pin_retention_days))
    owned = engine is None
    engine = engine or ContextEngine(lake)
    try:
        records, _plans = engine.run(request, pins, plan=False)
    finally:
        if owned:
            engine.close()
    rows = records["result"]
    buffer = io.BytesIO()
    pq.write_table(rows, buffer, compression="zstd")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    records_key = f"{DATASET_PREFIX}/records/{sha}.parquet"
    try:
        lake.store.put_once(records_key, data)
    except AlreadyExists:
        pass  # content-addressed: the same rows are already kept under this key
    manifest = signed(lake.settings.signing_key, {
        "format": DATASET_FORMAT, "name": name, "sql": sql, "pins": pins,
        "created_at": created.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "rows": rows.num_rows, "records_hash": records_hash(rows), "schema": schema_of(rows),
        "records": {"key": records_key, "sha256": sha, "bytes": len(data)}, "platform_version": platform_version(),
    })
    body = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    stamp = manifest["created_at"].replace("-", "").replace(":", "").replace(".", "")
    key = f"{DATASET_PREFIX}/{name}/{stamp}-{hashlib.sha256(body).hexdigest()[:16]}.json"
    lake.store.put_once(key, body)
    return Dataset(key, manifest, rows)


def list_datasets(lake: Lake, name: str | None = None) -> list[Dataset]:
    """Every dataset version (of ``name``), oldest first per name."""
    if name is not None:
        check_name(name)
    prefix = f"{DATASET_PREFIX}/{name}/" if name else f"{DATASET_PREFIX}/"
    out = []
    for info in sorted(lake.store.list(prefix), key=lambda o: o.key):
        if info.key.endswith(".json") and not info.key.startswith(f"{DATASET_PREFIX}/records/"):
            out.append(Dataset(info.key, orjson.loads(lake.store.get(info.key))))
    return out


def load_dataset(lake: Lake, ref: str) -> Dataset:
    """A dataset version by ``name@version`` (or ``name``: its latest), its rows checked against their hash.

    Raises:
        UnknownDataset: no such dataset or version.
        DatasetTampered: the rows file does not hash to its recorded sha256.
    """
    name, _, version = ref.partition("@")
    versions = list_datasets(lake, name)
    chosen = [d for d in versions if not version or d.version == ref]
    if not chosen:
        raise UnknownDataset(f"no dataset {ref!r}; list them with `agentlake eval dataset ls`")
    dataset = chosen[-1]
    part = dataset.manifest["records"]
    try:
        data = lake.store.get(part["key"])
    except ObjectNotFound:
        raise DatasetTampered(f"the rows of dataset {dataset.version} ({part['key']}) are missing") from None
    if hashlib.sha256(data).hexdigest() != part["sha256"]:
        raise DatasetTampered(f"the rows file {part['key']} of dataset {dataset.version} was altered: it no longer "
                              "hashes to the sha256 recorded when the dataset was created")
    dataset.records = pq.read_table(io.BytesIO(data))
    return dataset


def rerun_dataset(lake: Lake, dataset: Dataset, *, engine: ContextEngine | None = None) -> bool:
    """Whether the dataset's SQL, re-executed at its pinned snapshots, gives its recorded rows."""
    owned = engine is None
    engine = engine or ContextEngine(lake)
    try:
        pins = {k: (int(v) if v is not None else None) for k, v in dataset.manifest["pins"].items()}
        records, _ = engine.run(ContextRequest.from_sql(dataset.manifest["sql"]), pins, plan=False)
    finally:
        if owned:
            engine.close()
    return records_hash(records["result"]) == dataset.manifest["records_hash"]
