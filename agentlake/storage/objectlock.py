"""S3 Object Lock (compliance mode) for the write-once prefixes: the log, the artifacts, the audit records.

With ``AGENTLAKE_S3_OBJECT_LOCK_DAYS`` set, every object AgentLake writes under
:data:`LOCKED_PREFIXES` is created with ``x-amz-object-lock-mode: COMPLIANCE`` and a retain-until
date that many days ahead, in the same conditional request that creates it (``If-None-Match: *``),
so no object is ever there unlocked, not even for a moment, and a locked write costs no extra
request. Until that date no one, the account's root included, can delete or overwrite that version.
Everything else (table data and metadata files, pins, trash records, cursors) is written without a
lock, since maintenance must be able to delete it.

obstore cannot send the Object Lock headers, so these puts go through botocore (a runtime
dependency); reads, listings and the other writes stay on obstore. Object Lock must be enabled on
the bucket (only possible on a versioned bucket): :meth:`ObjectLock.check_bucket` asks once, when
the store is opened, and refuses to start otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agentlake.config import S3Settings
from agentlake.errors import ConfigError
from agentlake.storage.retry import describe_s3

# Keys relative to the store's root; what AgentLake writes once and never deletes.
LOCKED_PREFIXES: tuple[str, ...] = ("log/v1/", "artifacts/v1/", "audit/v1/")
LOCK_MODE = "COMPLIANCE"


class ObjectExists(Exception):
    """The conditional create found an object at the key (412): the caller decides what that means."""


class ObjectLock:
    """Creates objects under the locked prefixes with compliance retention, through botocore."""

    def __init__(self, s3: S3Settings, days: int, *, max_retries: int, connect_timeout_s: float,
                 request_timeout_s: float) -> None:
        import boto3
        from botocore.config import Config

        self.days = days
        self._bucket = s3.bucket
        self._prefix = f"{s3.prefix}/" if s3.prefix else ""
        self._where = describe_s3(s3)
        config = Config(
            region_name=s3.region,
            connect_timeout=connect_timeout_s,
            read_timeout=request_timeout_s,
            retries={"max_attempts": max_retries + 1, "mode": "standard"},
            # S3-compatible servers are usually addressed by path, as the obstore client does.
            s3={"addressing_style": "path"} if s3.endpoint else None,
        )
        # The secrets are unwrapped here only, for the client that needs them.
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=s3.access_key_id.get_secret_value() if s3.access_key_id else None,
            aws_secret_access_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
            aws_session_token=s3.session_token.get_secret_value() if s3.session_token else None,
            config=config,
        )

    @staticmethod
    def covers(key: str) -> bool:
        """Whether an object at ``key`` is written under Object Lock."""
        return key.startswith(LOCKED_PREFIXES)

    def retain_until(self, now: datetime | None = None) -> datetime:
        """The retain-until date of an object written ``now``."""
        return (now or datetime.now(UTC)) + timedelta(days=self.days)

    def put_once(self, key: str, data: bytes) -> None:
        """Create ``key`` with ``data``, locked in compliance mode, if no object is there yet.

        Raises:
            ObjectExists: the key holds an object already (it is left untouched).
            botocore's errors once its own retries are spent (sorted by the retry policy).
        """
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(
                Bucket=self._bucket, Key=self._prefix + key, Body=data, IfNoneMatch="*",
                ObjectLockMode=LOCK_MODE, ObjectLockRetainUntilDate=self.retain_until(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise ObjectExists(key) from exc
            raise

    def check_bucket(self) -> None:
        """Refuse to start unless the bucket has Object Lock enabled.

        Raises:
            ConfigError: Object Lock is not enabled on the bucket, or its configuration cannot be read.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        remedy = ("create the bucket with Object Lock enabled (`aws s3api create-bucket "
                  "--object-lock-enabled-for-bucket`), or unset AGENTLAKE_S3_OBJECT_LOCK_DAYS")
        try:
            answer = self._client.get_object_lock_configuration(Bucket=self._bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(f"AGENTLAKE_S3_OBJECT_LOCK_DAYS is set but {self._where} has no Object Lock; "
                                  f"{remedy}") from None
            raise ConfigError(f"cannot read the Object Lock configuration of {self._where} ({code}); grant "
                              f"s3:GetBucketObjectLockConfiguration, or unset AGENTLAKE_S3_OBJECT_LOCK_DAYS") from None
        except BotoCoreError as exc:
            raise ConfigError(f"cannot reach {self._where} to read its Object Lock configuration "
                              f"({type(exc).__name__}); check AGENTLAKE_S3_ENDPOINT and the network") from None
        enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise ConfigError(f"AGENTLAKE_S3_OBJECT_LOCK_DAYS is set but Object Lock is not enabled on "
                              f"{self._where}; {remedy}")
