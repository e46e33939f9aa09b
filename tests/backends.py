"""Where the real test servers are, and how to take them away mid-test.

``scripts/test`` starts SeaweedFS, PostgreSQL and OpenSearch on 127.0.0.1 and
exports ``ARCHIVER_TEST_*`` variables; this module reads them. A missing
variable raises RuntimeError: a test that needs a real server fails when the
server is not there, it never skips.

    from tests import backends

    url = backends.pg_url()
    bucket = backends.new_bucket()          # Object Lock, COMPLIANCE 1 day
    backends.stop("opensearch")             # fault test ...
    backends.start("opensearch")            # ... same data dir, same keys
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

SERVERS = ("seaweedfs", "postgres", "opensearch")
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and admin keys of the per-run SeaweedFS S3 gateway."""

    endpoint_url: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = REGION


def _env(name: str, what: str) -> str:
    """The variable's value. Raises RuntimeError when scripts/test did not set it."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{what} not running: run the suite with scripts/test ({name} is unset)")
    return value


def s3_settings() -> S3Settings:
    """SeaweedFS S3 endpoint and keys. Raises RuntimeError when not running."""
    return S3Settings(
        endpoint_url=_env("ARCHIVER_TEST_S3_ENDPOINT", "SeaweedFS"),
        access_key=_env("ARCHIVER_TEST_S3_ACCESS_KEY", "SeaweedFS"),
        secret_key=_env("ARCHIVER_TEST_S3_SECRET_KEY", "SeaweedFS"),
    )


def pg_url() -> str:
    """SQLAlchemy URL of the throwaway PostgreSQL database. Raises RuntimeError when not running."""
    return _env("ARCHIVER_TEST_PG_URL", "PostgreSQL")


def opensearch_url() -> str:
    """Base URL of the OpenSearch node. Raises RuntimeError when not running."""
    return _env("ARCHIVER_TEST_OPENSEARCH_URL", "OpenSearch")


def s3_client() -> Any:
    """A boto3 S3 client on the test gateway (path-style). Raises RuntimeError when not running."""
    import boto3  # lazily: unit tests never need it
    from botocore.config import Config

    s = s3_settings()
    return boto3.client(
        "s3",
        endpoint_url=s.endpoint_url,
        region_name=s.region,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def locked_store_url(monkeypatch: Any) -> tuple[str, str]:
    """A new Object Lock bucket on SeaweedFS and the store URL of its ``archive/`` prefix,
    with the AWS credentials set in the environment through ``monkeypatch``."""
    s3 = s3_settings()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    bucket = new_bucket(locked=True)
    return bucket, f"s3://{bucket}/archive?endpoint_url={s3.endpoint_url}&region={s3.region}"


def new_bucket(locked: bool = True) -> str:
    """Create a uniquely named bucket and return its name.

    With ``locked`` the bucket has Object Lock and a default COMPLIANCE
    retention of 1 day, so nothing written to it can be deleted during the run.
    Raises RuntimeError when SeaweedFS is not running, botocore errors otherwise.
    """
    client = s3_client()
    name = f"t-{uuid.uuid4().hex[:24]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    if locked:
        client.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
    return name


def stop(name: str) -> None:
    """Stop one server (``seaweedfs``, ``postgres`` or ``opensearch``) and wait until its ports are free.

    Raises RuntimeError when the suite was not started by scripts/test or the
    control script fails, ValueError for an unknown name.
    """
    _ctl("stop", name)


def start(name: str) -> None:
    """Start a stopped server again on its old data dir and credentials; returns once it answers.

    Raises RuntimeError when the suite was not started by scripts/test or the
    server does not come back, ValueError for an unknown name.
    """
    _ctl("start", name)


def _ctl(action: str, name: str) -> None:
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; expected one of {', '.join(SERVERS)}")
    ctl = _env("ARCHIVER_TEST_BACKENDS_CTL", "backends control script")
    _env("ARCHIVER_TEST_BACKENDS_DIR", "backends state dir")
    done = subprocess.run([ctl, action, name], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/backends {action} {name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
