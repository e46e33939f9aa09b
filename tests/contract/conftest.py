"""S3 fixtures for the store contract suite, over the real SeaweedFS that scripts/test starts.

Where the server is comes from ``tests.backends``. When it is not running, the tests that
need it fail with a message saying so: a contract suite never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests import backends


@dataclass(frozen=True)
class S3Server:
    """The running test gateway, as the store tests use it."""

    settings: backends.S3Settings

    def client(self) -> Any:
        """A plain boto3 client for setting up buckets and poking behind the driver's back."""
        return backends.s3_client()

    def make_bucket(self, *, locked: bool = True) -> str:
        """A fresh bucket; ``locked`` gives Object Lock with a COMPLIANCE 1-day default."""
        return backends.new_bucket(locked=locked)

    def store_url(self, bucket: str, prefix: str = "") -> str:
        """The archive's URL for ``bucket`` (and a key prefix) on this server."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint_url={self.settings.endpoint_url}&region={self.settings.region}"


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """The SeaweedFS that scripts/test started. Fails (never skips) when it was not started."""
    try:
        return S3Server(backends.s3_settings())
    except RuntimeError as exc:
        missing = str(exc)
    # Outside the except block, so the report is this one line, not a chained traceback.
    pytest.fail(f"{missing}; the S3 store contract needs the real SeaweedFS", pytrace=False)


@pytest.fixture(scope="module")
def s3_bucket(s3_server: S3Server) -> str:
    """One fresh Object Lock bucket per test module (locked objects make buckets undeletable)."""
    return s3_server.make_bucket(locked=True)


@pytest.fixture
def s3_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """Give the driver's standard boto3 credential chain the test identity, and nothing else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.settings.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.settings.secret_key)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # Keep a developer's ~/.aws out of the chain.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    yield s3_server
