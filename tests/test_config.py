"""Settings: one declaration per setting, its bounds enforced in one line, secrets never shown, docs generated."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentlake.config import S3Settings, Settings, setting_default, settings_table
from agentlake.errors import ConfigError
from agentlake.gate.suites import QualityPolicy
from agentlake.maintenance.maintain import CompactionPolicy, RetentionPolicy

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- BEGIN settings table", "<!-- END settings table -->"


def test_an_empty_environment_gives_the_declared_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)})
    assert settings.home == tmp_path and settings.store == "local" and settings.s3 is None
    assert settings.catalog_uri is None and settings.resolved_catalog_uri == f"sqlite:///{tmp_path / 'catalog.db'}"
    assert (settings.ui_port, settings.ingest_interval_s, settings.dedup_window_days) == (3000, 5, 1)
    assert (settings.quality_max_quarantine_share, settings.snapshots_keep_last) == (0.5, 10)
    assert settings.quality_fleet_epoch == "2024-01-01T00:00:00+00:00"
    assert Settings.from_env({}).home == Path(".agentlake").resolve()


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_UI_PORT": " ", "AGENTLAKE_STORE": ""})
    assert settings.ui_port == 3000 and settings.store == "local"


def test_values_are_read_from_their_variables_and_normalised(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE": " S3 ", "AGENTLAKE_S3_BUCKET": " lake ",
        "AGENTLAKE_S3_PREFIX": "/tenant/", "AWS_DEFAULT_REGION": "eu-west-1", "AGENTLAKE_S3_REQUEST_TIMEOUT_S": "12",
        "AGENTLAKE_QUALITY_FLEET_EPOCH": "2025-03-01T00:00:00Z", "AGENTLAKE_DEMO_RATE": "0",
    })
    assert settings.s3 is not None
    assert (settings.s3.bucket, settings.s3.prefix, settings.s3.region) == ("lake", "tenant", "eu-west-1")
    assert settings.s3.request_timeout_s == 12.0 and settings.s3.connect_timeout_s == 5.0
    assert settings.warehouse_uri == "s3://lake/tenant/warehouse"
    assert settings.quality_fleet_epoch == "2025-03-01T00:00:00+00:00" and settings.demo_rate == 0.0


def test_direct_construction_reads_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAKE_UI_PORT", "4444")
    monkeypatch.setenv("AGENTLAKE_STORE", "s3")
    settings = Settings(home=tmp_path)
    assert settings.ui_port == 3000 and settings.store == "local"
    changed = settings.model_copy(update={"ingest_interval_s": 30})
    assert changed.ingest_interval_s == 30 and settings.ingest_interval_s == 5


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("AGENTLAKE_STORE", "gcs", "is not a known store"),
    ("AGENTLAKE_UI_PORT", "soon", "is not a whole number"),
    ("AGENTLAKE_INGEST_INTERVAL_S", "1.5", "is not a whole number"),
    ("AGENTLAKE_STORE_RETRY_S", "inf", "is not a number"),
    ("AGENTLAKE_DEDUP_WINDOW_DAYS", "-1", ">= 0"),
    ("AGENTLAKE_UI_PORT", "70000", "<= 65535"),
    ("AGENTLAKE_QUALITY_MAX_QUARANTINE_SHARE", "1.5", "<= 1"),
    ("AGENTLAKE_SNAPSHOTS_KEEP_LAST", "0", ">= 1"),
    ("AGENTLAKE_QUALITY_FLEET_EPOCH", "last tuesday", "is not an ISO 8601 time"),
    ("AGENTLAKE_QUALITY_FLEET_EPOCH", "2024-01-01T00:00:00", "has no zone"),
])
def test_a_bad_value_is_refused_in_one_line_naming_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r} ") and says in message
    assert "\n" not in message and ("set it" in message or "add one" in message)


def test_an_s3_setting_out_of_bounds_is_refused_naming_its_variable() -> None:
    env = {"AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": "lake", "AGENTLAKE_S3_CONNECT_TIMEOUT_S": "0"}
    with pytest.raises(ConfigError, match=r"^AGENTLAKE_S3_CONNECT_TIMEOUT_S='0' is out of bounds; .*> 0"):
        Settings.from_env(env)


def test_s3_without_a_bucket_is_refused_naming_the_bucket_variable() -> None:
    with pytest.raises(ConfigError, match=r"^AGENTLAKE_STORE=s3 needs AGENTLAKE_S3_BUCKET"):
        Settings.from_env({"AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": "  "})


def test_secrets_never_appear_in_repr_str_or_dumps(tmp_path: Path) -> None:
    env = {
        "AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": "lake",
        "AWS_ACCESS_KEY_ID": "AKIA-CANARY", "AWS_SECRET_ACCESS_KEY": "SECRET-CANARY",
        "AWS_SESSION_TOKEN": "TOKEN-CANARY", "AGENTLAKE_CATALOG_URI": "postgresql://lake:PW-CANARY@db/lake",
    }
    settings = Settings.from_env(env)
    assert settings.s3 is not None and settings.catalog_uri is not None
    shown = " ".join([repr(settings), str(settings), repr(settings.s3), str(settings.s3),
                      settings.model_dump_json(), str(settings.model_dump())])
    for canary in ("AKIA-CANARY", "SECRET-CANARY", "TOKEN-CANARY", "PW-CANARY"):
        assert canary not in shown
    # The values are there for the clients that need them, unwrapped only at the point of use.
    assert settings.s3.secret_access_key is not None
    assert settings.s3.secret_access_key.get_secret_value() == "SECRET-CANARY"
    assert settings.resolved_catalog_uri == "postgresql://lake:PW-CANARY@db/lake"
    assert pickle.loads(pickle.dumps(settings.s3)) == settings.s3  # producer processes receive it


def test_the_policies_take_their_defaults_from_the_declaration() -> None:
    defaults = Settings(home=Path("unused"))
    assert QualityPolicy() == QualityPolicy.from_settings(defaults)
    assert RetentionPolicy() == RetentionPolicy.from_settings(defaults)
    assert CompactionPolicy() == CompactionPolicy.from_settings(defaults)
    assert CompactionPolicy.from_settings(Settings.from_env({"AGENTLAKE_COMPACTION_MIN_FILES": "7"})).min_files == 7
    assert setting_default("request_timeout_s") == S3Settings(bucket="b").request_timeout_s == 30.0
    with pytest.raises(KeyError):
        setting_default("no_such_setting")


def test_every_variable_is_in_the_generated_table_once() -> None:
    table = settings_table()
    variables = re.findall(r"`((?:AGENTLAKE|AWS)_[A-Z0-9_]+)`", table)
    assert len(variables) == len(set(variables))
    assert {"AGENTLAKE_HOME", "AGENTLAKE_CATALOG_URI", "AWS_SECRET_ACCESS_KEY", "AGENTLAKE_S3_BUCKET"} <= set(variables)
    secret_rows = {line.split("|")[1].strip() for line in table.splitlines() if line.endswith("| yes |")}
    assert secret_rows == {"`AGENTLAKE_CATALOG_URI`", "`AWS_ACCESS_KEY_ID`", "`AWS_SECRET_ACCESS_KEY`",
                           "`AWS_SESSION_TOKEN`", "`AGENTLAKE_SIGNING_KEY`", "`AGENTLAKE_SIGNING_KEYS_PREVIOUS`",
                           "`AGENTLAKE_SOURCES_SQL_URL`", "`AGENTLAKE_SOURCES_API_URL`", "`AGENTLAKE_AGENT_LLM_API_KEY`"}


def test_the_configuration_docs_match_the_declaration() -> None:
    text = DOCS.read_text()
    assert BEGIN in text and END in text, f"{DOCS} lost its generated-table markers"
    between = text.split(BEGIN, 1)[1].split("-->", 1)[1].split(END, 1)[0]
    assert between.strip() == settings_table().strip(), (
        "docs/configuration.md is out of date: run `python -m agentlake.config` and paste its table between the markers"
    )


def test_python_dash_m_prints_the_table() -> None:
    out = subprocess.run([sys.executable, "-m", "agentlake.config"], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert out == settings_table()
