"""Deployment settings: every setting declared once, with its variable, default, bounds and meaning.

Nothing in AgentLake reads ``os.environ`` except :meth:`Settings.from_env`, and only when
called; constructing :class:`Settings` directly reads no environment at all (tests and
benchmarks build explicit settings). The embedded default needs no variable; the S3 store
needs a bucket. Secrets are ``SecretStr``: their value is taken out with
``get_secret_value()`` only where a client is handed it, never in repr, logs or errors.

The policies (quality, retention, compaction, S3 timeouts) take their defaults from the
declarations here (:func:`setting_default`), and ``docs/configuration.md`` is generated from
them (``python -m agentlake.config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agentlake.errors import ConfigError

STORE_KINDS = ("local", "s3")
M = TypeVar("M", bound=BaseModel)


class S3Settings(BaseModel):
    """Where and how to reach an S3-compatible bucket. Secrets never appear in repr."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="forbid",
                              allow_inf_nan=False)

    bucket: str = Field(validation_alias="AGENTLAKE_S3_BUCKET", min_length=1,
                        description="bucket holding the log, artifacts and warehouse")
    prefix: str = Field("", validation_alias="AGENTLAKE_S3_PREFIX", description="key prefix inside the bucket")
    endpoint: str | None = Field(None, validation_alias="AGENTLAKE_S3_ENDPOINT",
                                 description="endpoint URL of an S3-compatible server (unset: AWS S3)")
    region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
                        description="S3 region (standard AWS variable; AWS_DEFAULT_REGION also read)")
    access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID",
                                            description="S3 access key (standard AWS variable)")
    secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY",
                                                description="S3 secret key (standard AWS variable)")
    session_token: SecretStr | None = Field(None, validation_alias="AWS_SESSION_TOKEN",
                                            description="S3 session token, if any (standard AWS variable)")
    connect_timeout_s: float = Field(5.0, validation_alias="AGENTLAKE_S3_CONNECT_TIMEOUT_S", gt=0, le=600,
                                     description="seconds to connect to the S3 server before the attempt is retried")
    request_timeout_s: float = Field(30.0, validation_alias="AGENTLAKE_S3_REQUEST_TIMEOUT_S", gt=0, le=3600,
                                     description="seconds one S3 request may take before it is abandoned and retried")
    max_retries: int = Field(10, validation_alias="AGENTLAKE_S3_MAX_RETRIES", ge=0, le=100,
                             description="retries of one object-store request; beyond them the stages retry")
    max_retry_timeout_s: float = Field(180.0, validation_alias="AGENTLAKE_S3_MAX_RETRY_TIMEOUT_S", gt=0,
                                       description="seconds one object-store request is retried at most "
                                                   "(also bounded by AGENTLAKE_STORE_RETRY_S)")

    object_lock_days: int | None = Field(
        None, validation_alias="AGENTLAKE_S3_OBJECT_LOCK_DAYS", ge=1, le=36500,
        description="days of S3 Object Lock retention (compliance mode) for every object written under log/v1/, "
                    "artifacts/v1/ and audit/v1/ (unset: no lock); the bucket must have Object Lock enabled, and "
                    "the local store refuses it")

    @field_validator("prefix", mode="before")
    @classmethod
    def _strip_slashes(cls, value: Any) -> Any:
        return value.strip("/") if isinstance(value, str) else value


class Settings(BaseSettings):
    """One deployment of AgentLake: its home folder, object store, catalog and tuning."""

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="forbid",
                                      allow_inf_nan=False, validate_default=True)

    home: Path = Field(Path(".agentlake"), validation_alias="AGENTLAKE_HOME",
                       description="root folder of the embedded deployment")
    store: Literal["local", "s3"] = Field("local", validation_alias="AGENTLAKE_STORE",
                                          description="object store kind: local or s3")
    s3: S3Settings | None = Field(None, description="the bucket, when AGENTLAKE_STORE=s3 (the AGENTLAKE_S3_* "
                                                     "and AWS_* variables)")
    catalog_uri: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_CATALOG_URI",
        description="SQLAlchemy URI of the Iceberg SQL catalog (unset: sqlite under AGENTLAKE_HOME); "
                    "a secret, since a Postgres URI carries its password")
    ui_port: int = Field(3000, validation_alias="AGENTLAKE_UI_PORT", ge=1, le=65535,
                         description="port of the Dagster UI started by `make run`, on 127.0.0.1")
    audit_port: int = Field(3001, validation_alias="AGENTLAKE_AUDIT_PORT", ge=1, le=65535,
                            description="port of the read-only audit pages (`/audit/<run id>`) that `make run` "
                                        "serves on 127.0.0.1 beside the Dagster UI; the context index links to them")
    ui_url: str | None = Field(None, validation_alias="AGENTLAKE_UI_URL",
                               description="address of the running platform's Dagster webserver, for `agentlake "
                                           "backfill` (unset: http://127.0.0.1:AGENTLAKE_UI_PORT)")
    demo_rate: float = Field(1.0, validation_alias="AGENTLAKE_DEMO_RATE", ge=0,
                             description="agent runs per second the demo fleet of `make run` emits (0 turns it off)")
    ingest_interval_s: int = Field(5, validation_alias="AGENTLAKE_INGEST_INTERVAL_S", ge=0,
                                   description="seconds between ingest sensor ticks: at most one commit per table "
                                               "per tick (Dagster's sensor daemon evaluates at most every 5 s)")
    dedup_window_days: int = Field(1, validation_alias="AGENTLAKE_DEDUP_WINDOW_DAYS", ge=0,
                                   description="arrival days before and after a segment's own searched for "
                                               "repeated event_ids")
    freshness_events_s: float = Field(
        300.0, validation_alias="AGENTLAKE_FRESHNESS_EVENTS_S", gt=0,
        description="freshness promise of raw/events: its check fails when the newest publish is older")
    freshness_facts_s: float = Field(
        600.0, validation_alias="AGENTLAKE_FRESHNESS_FACTS_S", gt=0,
        description="freshness promise of the fact tables: their checks fail when the newest update is older")
    quality_max_quarantine_share: float = Field(
        0.5, validation_alias="AGENTLAKE_QUALITY_MAX_QUARANTINE_SHARE", ge=0, le=1,
        description="quality gate: a batch with a larger share of quarantined lines is held")
    quality_future_skew_s: float = Field(3600.0, validation_alias="AGENTLAKE_QUALITY_FUTURE_SKEW_S", ge=0,
                                         description="quality gate: seconds an event's ts may be after its "
                                                     "segment's arrival")
    quality_fleet_epoch: str = Field("2024-01-01T00:00:00+00:00", validation_alias="AGENTLAKE_QUALITY_FLEET_EPOCH",
                                     description="quality gate: events with an earlier ts are quarantined "
                                                 "(ISO 8601 with a zone)")
    store_retry_s: float = Field(300.0, validation_alias="AGENTLAKE_STORE_RETRY_S", ge=0,
                                 description="seconds an ingest keeps retrying while the object store fails "
                                             "before it gives up")
    snapshot_retention_hours: float = Field(
        0.25, validation_alias="AGENTLAKE_SNAPSHOT_RETENTION_HOURS", ge=0,
        description="table maintenance expires snapshots older than this unless a branch or tag references "
                    "them; pinned ones stay readable through their pin")
    snapshots_keep_last: int = Field(10, validation_alias="AGENTLAKE_SNAPSHOTS_KEEP_LAST", ge=1,
                                     description="table maintenance always keeps this many latest snapshots of "
                                                 "each table (at least 1: the current one)")
    compaction_small_file_bytes: int = Field(
        8 * 1024 * 1024, validation_alias="AGENTLAKE_COMPACTION_SMALL_FILE_BYTES", ge=1,
        description="table maintenance compacts data files smaller than this")
    compaction_target_file_bytes: int = Field(
        64 * 1024 * 1024, validation_alias="AGENTLAKE_COMPACTION_TARGET_FILE_BYTES", ge=1,
        description="size of the files compaction writes")
    compaction_min_files: int = Field(4, validation_alias="AGENTLAKE_COMPACTION_MIN_FILES", ge=1,
                                      description="a partition is compacted once it has this many small files")
    pin_retention_days: float = Field(400.0, validation_alias="AGENTLAKE_PIN_RETENTION_DAYS", ge=0,
                                      description="days a snapshot read by a context artifact stays pinned "
                                                  "(readable, its files kept) after the artifact is made")
    sources_sql_url: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_SOURCES_SQL_URL",
        description="SQLAlchemy URL of the helpdesk database the `helpdesk` source loads (unset: the demo "
                    "helpdesk under AGENTLAKE_HOME/sources); a secret, since a URL carries its password")
    sources_api_url: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_SOURCES_API_URL",
        description="base URL of the helpdesk REST API the `helpdesk_api` source loads (`make run` serves the "
                    "demo's and sets it; unset: the source is not configured); a secret, since a URL may carry a token")
    sources_documents_dir: Path | None = Field(
        None, validation_alias="AGENTLAKE_SOURCES_DOCUMENTS_DIR",
        description="folder of markdown and text documents the `documents` source loads into ext.documents "
                    "(unset: AGENTLAKE_HOME/sources/documents, where `make run` writes the demo corpus)")
    sources_api_port: int = Field(3002, validation_alias="AGENTLAKE_SOURCES_API_PORT", ge=1, le=65535,
                                  description="port `make run` serves the demo helpdesk REST API on (127.0.0.1)")
    sources_max_load_rows: int = Field(
        5_000_000, validation_alias="AGENTLAKE_SOURCES_MAX_LOAD_ROWS", ge=1,
        description="sources gate: a load of one table with more rows than this is held")
    signing_key: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_SIGNING_KEY",
        description="key of the HMAC that log segments and AgentLake's own records (context manifests, pins, "
                    "trash and audit records, validation results) carry; when set, a segment or record without a "
                    "valid one is treated as forged")
    signing_keys_previous: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_SIGNING_KEYS_PREVIOUS",
        description="retired signing keys, comma-separated: what they signed still verifies, nothing new is "
                    "signed with them")

    eval_interval_s: int = Field(300, validation_alias="AGENTLAKE_EVAL_INTERVAL_S", ge=1,
                                 description="seconds between the evaluation sensor's checks for new facts (each "
                                             "new facts run then leads to one evaluation run of its day)")
    agent_llm_base_url: str | None = Field(
        None, validation_alias="AGENTLAKE_AGENT_LLM_BASE_URL",
        description="base URL of an OpenAI-compatible endpoint (…/v1) the demo agents ask for their decisions "
                    "(unset: their deterministic policies decide, with no network)")
    agent_llm_model: str = Field("gpt-4o-mini", validation_alias="AGENTLAKE_AGENT_LLM_MODEL", min_length=1,
                                 description="the model the demo agents ask at AGENTLAKE_AGENT_LLM_BASE_URL")
    agent_llm_api_key: SecretStr | None = Field(
        None, validation_alias="AGENTLAKE_AGENT_LLM_API_KEY",
        description="bearer key of the endpoint at AGENTLAKE_AGENT_LLM_BASE_URL, if it needs one")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the keywords given: the environment is read by from_env, from the mapping it is handed.
        return (init_settings,)

    @field_validator("store", mode="before")
    @classmethod
    def _store_kind(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("quality_fleet_epoch")
    @classmethod
    def _instant(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("is not an ISO 8601 time; set it like 2024-01-01T00:00:00Z") from None
        if parsed.tzinfo is None:
            raise ValueError(f"has no zone; add one, e.g. {value.strip()}Z")
        return parsed.isoformat()

    @property
    def previous_signing_keys(self) -> tuple[SecretStr, ...]:
        """The retired signing keys, accepted when verifying only."""
        if self.signing_keys_previous is None:
            return ()
        parts = self.signing_keys_previous.get_secret_value().split(",")
        return tuple(SecretStr(part.strip()) for part in parts if part.strip())

    @property
    def store_root(self) -> Path:
        """Folder that acts as the object store on the embedded default."""
        return self.home / "store"

    @property
    def resolved_ui_url(self) -> str:
        """The running platform's webserver: AGENTLAKE_UI_URL, or `make run`'s own address."""
        return (self.ui_url or f"http://127.0.0.1:{self.ui_port}").rstrip("/")

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def resolved_catalog_uri(self) -> str:
        """The catalog's SQLAlchemy URI, unwrapped for the catalog client only: it may carry a password."""
        if self.catalog_uri is not None:
            return self.catalog_uri.get_secret_value()
        return f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def sources_home(self) -> Path:
        """Folder of the demo source databases and of each load's scratch space."""
        return self.home / "sources"

    @property
    def documents_dir(self) -> Path:
        """The folder the ``documents`` source loads."""
        return self.sources_documents_dir or self.sources_home / "documents"

    @property
    def resolved_sources_sql_url(self) -> str:
        """The helpdesk database's SQLAlchemy URL, unwrapped for the loader only: it may carry a password."""
        if self.sources_sql_url is not None:
            return self.sources_sql_url.get_secret_value()
        return f"sqlite:///{self.sources_home / 'helpdesk.db'}"

    @property
    def warehouse_uri(self) -> str:
        """Where Iceberg data and metadata files live: beside the log, on the same store."""
        if self.s3 is not None:
            base = f"s3://{self.s3.bucket}"
            return f"{base}/{self.s3.prefix.strip('/')}/warehouse" if self.s3.prefix else f"{base}/warehouse"
        return (self.store_root / "warehouse").resolve().as_uri()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Resolve the deployment from environment variables (the process's, or ``environ``).

        Raises:
            ConfigError: a value out of its bounds or not of its kind, an unknown store kind,
                or S3 without a bucket; one line naming the variable and the remedy.
        """
        env = os.environ if environ is None else environ
        values = _values_of(cls, env)
        values["home"] = Path(values.get("home", setting_default("home"))).expanduser().resolve()
        store = str(values.get("store", "local")).strip().lower()
        if store == "s3":
            s3_values = _values_of(S3Settings, env)
            if not s3_values.get("bucket", "").strip():
                raise ConfigError("AGENTLAKE_STORE=s3 needs AGENTLAKE_S3_BUCKET: set it to the bucket's name")
            s3_values["bucket"] = s3_values["bucket"].strip()
            values["s3"] = _validated(S3Settings, s3_values, env)
        elif env.get("AGENTLAKE_S3_OBJECT_LOCK_DAYS", "").strip():
            raise ConfigError("AGENTLAKE_S3_OBJECT_LOCK_DAYS is set but the store is a local folder, which has no "
                              "Object Lock: unset it, or set AGENTLAKE_STORE=s3 with a bucket that has Object Lock")
        return _validated(cls, values, env)


def _env_names(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return []


def _values_of(model: type[BaseModel], env: Mapping[str, str]) -> dict[str, Any]:
    """The model's fields found in ``env`` under their variables; an empty value counts as unset."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        for variable in _env_names(info):
            raw = env.get(variable)
            if raw is not None and raw.strip() != "":
                values[name] = raw
                break
    return values


def _validated(model: type[M], values: dict[str, Any], env: Mapping[str, str]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_one_line(model, exc.errors()[0], env)) from None


def _one_line(model: type[BaseModel], error: Any, env: Mapping[str, str]) -> str:
    """One line naming the variable, its value and what to set instead."""
    name = str(error["loc"][0]) if error["loc"] else ""
    info = model.model_fields.get(name)
    variables = _env_names(info) if info else []
    variable = next((v for v in variables if env.get(v, "").strip()), variables[0] if variables else name)
    shown = f"{variable}={env.get(variable)!r}"
    if info is not None and _is_secret(info):
        shown = variable  # a secret's value is never echoed
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("int_parsing", "int_from_float", "float_parsing", "int_type", "float_type", "finite_number"):
        wanted = "a whole number" if "int" in kind else "a number"
        return f"{shown} is not {wanted}; set it to {wanted} or unset it"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{shown} is out of bounds; set it to a value {_bounds(info)} or unset it for the default"
    if kind == "literal_error":
        return f"{shown} is not a known {name}; set it to one of {ctx.get('expected', '')}"
    if kind == "value_error":
        return f"{shown} {str(error['msg']).removeprefix('Value error, ')}"
    return f"{shown}: {error['msg']}; see docs/configuration.md"


def _is_secret(info: FieldInfo) -> bool:
    return "SecretStr" in str(info.annotation)


def _bounds(info: FieldInfo | None) -> str:
    """The field's bounds as text, e.g. ``>= 0, <= 1``; empty if it has none."""
    if info is None:
        return ""
    parts = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
    return ", ".join(parts)


def setting_default(name: str) -> Any:
    """The declared default of a setting (of :class:`Settings` or :class:`S3Settings`), for the
    policies' own defaults: one declaration, no second copy."""
    for model in (Settings, S3Settings):
        if name in model.model_fields:
            return model.model_fields[name].get_default(call_default_factory=True)
    raise KeyError(f"{name} is not a declared setting")


def settings_table() -> str:
    """The configuration table of the docs, generated from the declarations (markdown)."""
    rows = ["| Variable | Default | Bounds | Description | Secret |", "|---|---|---|---|---|"]
    for model in (Settings, S3Settings):
        for info in model.model_fields.values():
            variables = _env_names(info)
            if not variables:
                continue  # a group of other settings (s3), listed by its own variables
            default = info.get_default(call_default_factory=True)
            shown = "" if default is None else "(empty)" if default == "" else f"`{default}`"
            if model is S3Settings and info.is_required():
                shown = "(required for s3)"
            description = (info.description or "").replace("|", "\\|")
            name = " or ".join(f"`{v}`" for v in variables)
            rows.append(f"| {name} | {shown} | {_bounds(info)} | {description} | "
                        f"{'yes' if _is_secret(info) else 'no'} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
