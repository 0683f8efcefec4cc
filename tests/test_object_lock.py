"""S3 Object Lock by configuration: the log, artifact and audit prefixes are locked in compliance mode,
table files are not (maintenance still deletes garbage), and a bucket or store without Object Lock is
refused at start."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from agentlake import cli
from agentlake.config import S3Settings, Settings
from agentlake.context.assembly import ContextRequest, assemble
from agentlake.context.pins import PIN_ROOT
from agentlake.errors import AlreadyExists, ConfigError
from agentlake.gate.suites import QualityPolicy
from agentlake.log.writer import LogWriter
from agentlake.maintenance.maintain import RetentionPolicy, expire
from agentlake.pipeline.ingest import ingest
from agentlake.pipeline.stage import IngestOptions
from agentlake.storage.store import ObjectStore
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import EVENTS
from tests.conftest import S3_KEY, S3_SECRET
from tests.corpus import demo_lines

pytestmark = pytest.mark.integration

DAYS = 30
DAY = datetime(2025, 3, 1, tzinfo=UTC)


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                        region_name="us-east-1")


def _bucket(endpoint: str, *, lock: bool) -> str:
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    _client(endpoint).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=lock)
    return bucket


def _lake(tmp_path: Path, endpoint: str, *, lock_days: int | None) -> Lake:
    s3 = S3Settings(bucket=_bucket(endpoint, lock=True), prefix="agentlake", endpoint=endpoint,
                    access_key_id=S3_KEY, secret_access_key=S3_SECRET, object_lock_days=lock_days)
    return Lake(Settings(home=tmp_path / "home", store="s3", s3=s3, pin_retention_days=0))


def _written(lake: Lake) -> dict[str, str]:
    """Two ingested segments (two snapshots of raw.events) and one context artifact: each kind's key."""
    at = DAY
    writer = LogWriter(lake.store, "locked", background_flush=False, clock=lambda: at)
    segments = []
    for n in range(2):
        at = DAY + timedelta(hours=1, minutes=n)
        for line in demo_lines(n + 1, 2, at):
            writer.append_line(line)
        segment = writer.flush()
        assert segment is not None
        segments.append(segment)
        # The second through the quality gate, which keeps its audit records under audit/v1/.
        ingest(lake, [segment], IngestOptions(run_id=f"lock-{n}", quality=QualityPolicy() if n else None))
    result = assemble(lake, ContextRequest.from_sql("SELECT count(*) AS n FROM raw.events"), run_id="locked-run",
                      agent_id="auditor")
    table_file = next(o.key for o in lake.store.list("warehouse/") if o.key.endswith(".parquet"))
    pin = lake.store.list(f"{PIN_ROOT}/")[0].key  # a write-once put outside the locked prefixes
    return {"segment": segments[0].key, "manifest": result.artifact.key, "table_file": table_file, "pin": pin}


def _lock_of(lake: Lake, key: str) -> tuple[str | None, datetime | None, str]:
    assert lake.settings.s3 is not None
    head = _client(str(lake.settings.s3.endpoint)).head_object(Bucket=lake.settings.s3.bucket,
                                                                Key=f"{lake.settings.s3.prefix}/{key}")
    return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate"), head["VersionId"]


def _delete_version(lake: Lake, key: str, version: str) -> None:
    assert lake.settings.s3 is not None
    _client(str(lake.settings.s3.endpoint)).delete_object(Bucket=lake.settings.s3.bucket,
                                                          Key=f"{lake.settings.s3.prefix}/{key}", VersionId=version)


def test_with_object_lock_set_segments_and_artifacts_are_locked_in_compliance_mode_and_table_files_are_not(
    tmp_path: Path, s3_endpoint: str,
) -> None:
    lake = _lake(tmp_path, s3_endpoint, lock_days=DAYS)
    before = datetime.now(UTC)
    keys = _written(lake)
    after = datetime.now(UTC)
    audit = [o.key for o in lake.store.list("audit/v1/")]
    assert audit, "the gated ingest kept no audit record"
    for key in [keys["segment"], keys["manifest"], *audit]:
        mode, until, version = _lock_of(lake, key)
        assert mode == "COMPLIANCE", key
        assert until is not None
        assert before + timedelta(days=DAYS, seconds=-1) <= until <= after + timedelta(days=DAYS, seconds=1), key
        # No one deletes the locked version, and the write-once put still refuses a second write.
        with pytest.raises(ClientError, match="AccessDenied"):
            _delete_version(lake, key, version)
        assert lake.store.get(key)
    with pytest.raises(AlreadyExists):
        lake.store.put_once(keys["segment"], b"forged")
    for key in (keys["table_file"], keys["pin"]):
        mode, until, _ = _lock_of(lake, key)
        assert mode is None and until is None, key
    # Maintenance still deletes what no snapshot reads any more: the table files are not locked.
    policy = RetentionPolicy(keep_hours=0, keep_last=1)
    now = datetime.now(UTC)
    assert expire(lake, EVENTS.name, now=now + timedelta(hours=1), policy=policy).files_deferred > 0
    report = expire(lake, EVENTS.name, now=now + timedelta(days=1), policy=policy)
    assert report.files_deleted > 0 and not report.refused, report


def test_without_object_lock_nothing_is_locked(tmp_path: Path, s3_endpoint: str) -> None:
    lake = _lake(tmp_path, s3_endpoint, lock_days=None)
    keys = _written(lake)
    for key in keys.values():
        mode, until, version = _lock_of(lake, key)
        assert mode is None and until is None, key
    _delete_version(lake, keys["segment"], _lock_of(lake, keys["segment"])[2])
    assert not lake.store.exists(keys["segment"])


def test_object_lock_on_a_bucket_without_it_is_refused_at_start_in_one_line(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = _bucket(s3_endpoint, lock=False)
    s3 = S3Settings(bucket=bucket, endpoint=s3_endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET,
                    object_lock_days=DAYS)
    with pytest.raises(ConfigError, match=f"'{bucket}' .* has no Object Lock; create the bucket with Object Lock"):
        ObjectStore.s3(s3)
    for name, value in {"AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": bucket, "AGENTLAKE_S3_ENDPOINT": s3_endpoint,
                        "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                        "AGENTLAKE_S3_OBJECT_LOCK_DAYS": str(DAYS)}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["log", "ls"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("agentlake: AGENTLAKE_S3_OBJECT_LOCK_DAYS is set but") and err.count("\n") == 1, err
    assert S3_SECRET not in err


def test_object_lock_on_the_local_folder_store_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigError, match="local folder, which has no Object Lock"):
        Settings.from_env({"AGENTLAKE_S3_OBJECT_LOCK_DAYS": "30"})
    monkeypatch.setenv("AGENTLAKE_S3_OBJECT_LOCK_DAYS", "30")
    assert cli.main(["log", "ls"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("agentlake: AGENTLAKE_S3_OBJECT_LOCK_DAYS is set but the store is a local folder")
    assert err.count("\n") == 1


def test_the_locked_writes_errors_are_sorted_by_the_one_retry_policy() -> None:
    from botocore.exceptions import EndpointConnectionError

    from agentlake.storage.retry import Failure, classify

    def answer(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")

    assert classify(answer("SlowDown", 503)) is Failure.TRANSIENT
    assert classify(answer("InternalError", 500)) is Failure.TRANSIENT
    assert classify(answer("ConditionalRequestConflict", 409)) is Failure.TRANSIENT
    assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:9")) is Failure.TRANSIENT
    assert classify(answer("AccessDenied", 403)) is Failure.TERMINAL
    assert classify(answer("InvalidRequest", 400)) is Failure.TERMINAL
