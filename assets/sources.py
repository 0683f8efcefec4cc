"""The external sources' ``ext`` tables as dagster-dlt assets, with the gate's rules as their checks.

One ``@dlt_assets`` per source: its resources become the assets ``ext/<table>`` (downstream of the
source itself, an external asset ``source/<name>``). The body runs AgentLake's own load
(:func:`agentlake.sources.external.load`: dlt extracts, the gate audits, one commit per table
publishes), not dagster-dlt's ``DagsterDltResource.run``, which would write straight to ``main``
past the gate. Each table reports a materialization carrying the snapshot ``main`` is at (the
published one, or the same as before when the load was held or brought nothing new), the dlt load
id and the cursor. dagster-dlt's decorator takes no check specs, so the rules are a multi-asset check
in the same job, reading what the table records of its last load (a held load's failed rules).
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    multi_asset_check,
)
from dagster_dlt import DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from agentlake.config import Settings
from agentlake.sources.external import (
    SOURCES,
    Source,
    TableLoad,
    configured,
    declared_dlt_source,
    gate_results,
    load,
    load_ext_table,
    source_rules,
)
from agentlake.tables.external import DOCUMENT_FILES, EXT_TABLES, ExternalTable
from agentlake.tables.lake import Lake
from platform_defs.resources import LakeResource

SOURCES_GROUP = "sources"
SOURCES_LANE = "sources"
SOURCES_CRON = "*/5 * * * *"
SPECS_BY_NAME = {spec.name: spec for source in SOURCES.values() for spec in source.tables}


def ext_key(spec: ExternalTable) -> AssetKey:
    return AssetKey(spec.name.split("."))


def source_key(source: Source) -> AssetKey:
    return AssetKey(["source", source.name])


EXT_KEYS = [ext_key(spec) for spec in (*EXT_TABLES, DOCUMENT_FILES)]


class ExtTranslator(DagsterDltTranslator):
    """dlt resources as ``ext/<table>`` assets of the sources group, downstream of their source."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.tables = {spec.resource: spec for spec in source.tables}

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        spec = self.tables[data.resource.name]
        return super().get_asset_spec(data).replace_attributes(
            key=ext_key(spec), deps=[source_key(self.source)], group_name=SOURCES_GROUP,
            kinds={"dlt", "iceberg", self.source.kind},
            description=f"{spec.name}: {self.source.description}, loaded with dlt and published through the gate "
            f"in one commit (key {spec.primary_key}, cursor {spec.cursor}). `agentlake sources ls` lists it.",
        ).merge_attributes(metadata={"key": spec.primary_key, "cursor_column": spec.cursor})


def _materialization(lake: Lake, result: TableLoad) -> MaterializeResult:
    """What the load did to a table: the snapshot ``main`` is at (new only if it published), load id, cursor."""
    table = load_ext_table(lake.catalog, SPECS_BY_NAME[result.table])
    snapshot = table.current_snapshot() if table is not None else None
    return MaterializeResult(asset_key=AssetKey(result.table.split(".")), metadata={
        "snapshot_id": str(snapshot.snapshot_id if snapshot is not None else ""),
        "published": result.published_snapshot_id is not None, "held": result.held,
        "failed": MetadataValue.json(result.failed), "dlt_load_id": result.load_id,
        "cursor": result.cursor_after or "", "cursor_before": result.cursor_before or "",
        "rows_loaded": result.rows_loaded, "dagster/row_count": result.rows or 0,
        **({"files_skipped": MetadataValue.json(result.skipped)} if result.skipped else {}),
    })


def build_source_assets(settings: Settings) -> list[AssetsDefinition | AssetChecksDefinition]:
    """Per configured source: its external asset, its dlt assets and its gate checks (the REST source only
    when its URL is set)."""
    import dlt

    out: list[AssetsDefinition | AssetChecksDefinition] = []
    for source in configured(settings):
        # Only declared: the pipeline is never run here; a load runs its own in a scratch folder.
        pipeline = dlt.pipeline(pipeline_name=f"agentlake_{source.name}",
                                pipelines_dir=str(settings.sources_home / "pipelines"),
                                destination=dlt.destinations.filesystem(
                                    bucket_url=str(settings.sources_home / "loads")),
                                dataset_name=source.name)
        out.append(AssetsDefinition(specs=[AssetSpec(source_key(source), group_name=SOURCES_GROUP,
                                                     kinds={source.kind}, description=source.description)]))
        out.append(_dlt_assets(source, pipeline))
        out.append(_gate_checks(source, settings.sources_max_load_rows))
    return out


def _dlt_assets(source: Source, pipeline: Any) -> AssetsDefinition:
    @dlt_assets(dlt_source=declared_dlt_source(source), dlt_pipeline=pipeline, name=f"load_{source.name}",
                dagster_dlt_translator=ExtTranslator(source))
    def _load(context: AssetExecutionContext, lake: LakeResource) -> Iterator[MaterializeResult]:
        # A source is extracted whole (one dlt load); a subset reports only the tables it selected.
        selected = {key.to_user_string() for key in context.selected_asset_keys}
        tables = Lake(lake.settings())
        for result in load(tables, [source.name], run_id=context.run.run_id):
            context.log.info(f"{result.table}: {result.rows_loaded} row(s) loaded, "
                             + ("held: " + ", ".join(result.failed) if result.held else
                                "unchanged" if result.unchanged else f"snapshot {result.published_snapshot_id}"))
            if result.table.replace(".", "/") in selected:
                yield _materialization(tables, result)

    return _load


def _gate_checks(source: Source, max_load_rows: int) -> AssetChecksDefinition:
    specs = [AssetCheckSpec(rule.name, asset=ext_key(spec), description=rule.description)
             for spec in source.tables for rule in source_rules(spec, max_load_rows)]

    @multi_asset_check(specs=specs, name=f"gate_{source.name}", can_subset=True)
    def _checks(context: AssetCheckExecutionContext, lake: LakeResource) -> Iterator[AssetCheckResult]:
        selected = set(context.selected_asset_check_keys)
        for spec, rule, failing in gate_results(Lake(lake.settings()), source):
            if AssetCheckKey(ext_key(spec), rule.name) not in selected:
                continue
            metadata: dict[str, Any] = {"rule": rule.description}
            if failing is not None:
                metadata |= {"held_load_id": failing["load_id"], "branch": failing["branch"],
                             "staged_snapshot_id": str(failing["snapshot_id"]),
                             "failed": MetadataValue.json(failing["failed"])}
            yield AssetCheckResult(asset_key=ext_key(spec), check_name=rule.name, passed=failing is None,
                                   severity=AssetCheckSeverity.ERROR, metadata=metadata)

    return _checks
