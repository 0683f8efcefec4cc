"""The dbt marts (``dbt_project/``) as Dagster assets, reading the lake's tables at pinned snapshots.

Each run pins the current snapshot of every source table first and passes the pins to dbt as
the ``agentlake_pins`` var, so every model of the run reads the same versions; the pins are
recorded on each materialization (``snapshots_read``). dbt's sources are the existing assets
(``raw/events``, ``facts/...``), so the lineage runs from the log to the marts; dbt's tests are
asset checks, its source tests checks on the AgentLake assets. The marts live in one DuckDB file
(one writer): they run in the ``marts`` lane, one run at a time, after facts runs.
"""


import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    MetadataValue,
    Output,
    define_asset_job,
    in_process_executor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from agentlake.context.query import resolve
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS, FACT_TABLES
from assets.ingest import INGEST_LANE_TAG
from platform_defs.lanes import lane_tags
from platform_defs.resources import LakeResource

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
MARTS_GROUP = "marts"
MARTS_LANE = "marts"
MARTS_JOB = "marts"
# The one writer of the marts' DuckDB file: every step that runs dbt holds this pool's single slot,
# whichever run it is in (the marts job, a backfill or a UI launch whose checks include dbt's source
# tests), so two dbt processes never contend for the file's lock.
MARTS_POOL = "marts_duckdb"
SOURCE_TABLES = [t.name for t in (EVENTS, *FACT_TABLES)]
SNAPSHOTS_READ = "snapshots_read"
# dbt from the environment AgentLake runs in, whether or not that environment's bin is on the PATH.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))


class MartsTranslator(DagsterDbtTranslator):
    """dbt's models and seeds under ``marts/``, in the marts group; sources keep their own keys
    (``raw/events``, ``facts/agent_runs``: the assets that write those tables)."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if manifest["sources"].get(unique_id) is not None:
            return spec
        props = self.get_resource_props(manifest, unique_id)
        return spec.replace_attributes(key=AssetKey([MARTS_GROUP, props["name"]]), group_name=MARTS_GROUP)


TRANSLATOR = MartsTranslator(settings=DagsterDbtTranslatorSettings(
    enable_asset_checks=True, enable_source_tests_as_checks=True))


def dbt_project() -> DbtProject:
    """The dbt project with a manifest parsed from its current files.

    ``dbt parse`` runs only when the manifest is missing or older than a file of the project (a clean
    checkout, an edited model), so the definitions load without it otherwise.
    """
    project = DbtProject(project_dir=DBT_PROJECT_DIR)
    if _stale(project.manifest_path):
        dbt_resource(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project


def dbt_resource(project: DbtProject) -> DbtCliResource:
    """The ``dbt`` resource: AgentLake's own dbt on this project."""
    return DbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE)


def _stale(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    generated = {DBT_PROJECT_DIR / "target", DBT_PROJECT_DIR / "logs"}
    return any(path.stat().st_mtime > built for path in DBT_PROJECT_DIR.rglob("*")
               if path.is_file() and not any(parent in generated for parent in path.parents))


def pins_to_read(lake: Lake) -> dict[str, dict[str, Any]]:
    """``{table: {metadata, snapshot_id}}``: each source table's current snapshot and the metadata file
    it is read through. A table never written is left out: it reads as empty."""
    handles = {name: lake.table(name) for name in SOURCE_TABLES}
    pins, _ = resolve(lake, SOURCE_TABLES, handles=handles)
    return {name: {"metadata": handles[name].metadata_location, "snapshot_id": snapshot_id}
            for name, snapshot_id in pins.items() if snapshot_id is not None}


def build_dbt_assets(project: DbtProject) -> AssetsDefinition:
    """The marts' assets and checks over ``project``'s manifest."""

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=TRANSLATOR,
        name="agentlake_marts",
        op_tags={INGEST_LANE_TAG: MARTS_LANE},
        pool=MARTS_POOL,
    )
    def agentlake_marts(context: AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource) -> Iterator[Any]:
        pins = pins_to_read(Lake(lake.settings()))
        snapshots = {name: pin["snapshot_id"] for name, pin in pins.items()}
        context.log.info(f"dbt reads the snapshots {snapshots}")
        read = {SNAPSHOTS_READ: MetadataValue.json({name: snapshots.get(name) for name in SOURCE_TABLES})}
        args = ["build", "--vars", json.dumps({"agentlake_pins": pins})]
        for event in dbt.cli(args, context=context).stream():
            yield event.with_metadata({**event.metadata, **read}) if isinstance(event, Output | AssetMaterialization) else event

    return agentlake_marts


def build_marts_job(marts: AssetsDefinition) -> UnresolvedAssetJobDefinition:
    """The marts job: the dbt models and seed, with every check dbt computes (its tests, and its source
    tests on the AgentLake assets). The ingest and facts jobs leave those source tests out: they run
    here, in the marts lane, where the DuckDB file has its one writer."""
    return define_asset_job(
        MARTS_JOB,
        selection=AssetSelection.assets(marts) | AssetSelection.checks(*marts.check_keys),
        executor_def=in_process_executor,
        tags=lane_tags(MARTS_LANE),
        description="dbt build of the marts over the lake's tables at pinned snapshots (launched after facts runs).",
    )
