"""The lake resource of an S3 deployment: the bucket, with endpoint and credentials from dagster-aws."""

from __future__ import annotations

from dagster_aws.s3 import S3Resource

from agentlake.config import S3Settings
from platform_defs.resources import LakeResource


class S3LakeResource(LakeResource):
    """The lake on an S3 bucket. Endpoint and credentials come from dagster-aws's ``S3Resource``,
    whose fields are ``EnvVar``s: the UI shows the variable's name, never its value."""

    s3_bucket: str
    s3_prefix: str = ""
    s3: S3Resource

    def s3_settings(self) -> S3Settings | None:
        cfg = self.s3
        given = {
            "endpoint": cfg.endpoint_url, "region": cfg.region_name, "access_key_id": cfg.aws_access_key_id,
            "secret_access_key": cfg.aws_secret_access_key, "session_token": cfg.aws_session_token,
        }
        # What dagster-aws leaves unset keeps the declared default (agentlake.config).
        return S3Settings(bucket=self.s3_bucket, prefix=self.s3_prefix,
                          **{name: value for name, value in given.items() if value is not None})
