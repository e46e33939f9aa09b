"""The pipeline on the scale-out backends: PostgreSQL catalog + SeaweedFS Object Lock store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from sqlalchemy import select

from archiver import sealer, stats
from archiver import verify as verifier
from archiver.app import create_app
from archiver.catalog import Record, Segment
from archiver.config import Settings
from archiver.errors import StoreError
from archiver.services import Services
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import all_fixture_bodies, make_env, sign
from tests.e2e.test_pipeline import msg_body

pytestmark = [pytest.mark.s3, pytest.mark.postgres]


@pytest.fixture
def scaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, str]]:
    bucket, store_url = backends.locked_store_url(monkeypatch)
    for catalog_url in _pg_schema_url():
        env = make_env(tmp_path / "home", ARCHIVER_CATALOG_URL=catalog_url, ARCHIVER_STORE_URL=store_url)
        services = Services.open(Settings.from_env(env))
        yield services, bucket
        services.close()


def _report(services: Services) -> verifier.Report:
    with services.sessions() as session:
        return verifier.audit(services.store, services.signing_key.public_key(), session)


def test_fixtures_seal_and_verify_on_postgres_and_s3_and_segments_are_locked(scaled: Any) -> None:
    services, bucket = scaled
    client = create_app(services=services).test_client()
    for _, body in all_fixture_bodies():
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    report = _report(services)
    assert report.ok, report.first_error
    s3 = backends.s3_client()
    key = next(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="archive/segments/")["Contents"])
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert _report(services).ok


def test_s3_unreachable_webhooks_keep_200_and_sealing_resumes(scaled: Any) -> None:
    services, _ = scaled
    client = create_app(services=services).test_client()
    first = msg_body("wamid.U0", "before the outage")
    client.post("/webhooks/whatsapp", data=first, headers=sign(first))
    sealer.seal_pending(services)
    backends.stop("seaweedfs")
    try:
        for i in range(1, 6):
            body = msg_body(f"wamid.U{i}", f"during the outage {i}")
            assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
        with pytest.raises(StoreError):
            sealer.seal_pending(services)
        body = msg_body("wamid.U6", "still during the outage")
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
        with pytest.raises(StoreError):
            sealer.seal_pending(services)
        with services.sessions() as session:
            assert stats.collect(session)["pending"] >= 1  # the journal grows
    finally:
        backends.start("seaweedfs")
    sealer.seal_pending(services)
    with services.sessions() as session:
        counts = stats.collect(session)
    assert counts["pending"] == 0 and counts["items"]["message"] == 7
    report = _report(services)
    assert report.ok, report.first_error


def test_parallel_verify_on_postgres_and_s3_reports_like_one_process(scaled: Any) -> None:
    services, _ = scaled
    client = create_app(services=services).test_client()
    for run in range(3):
        for i in range(3):
            body = msg_body(f"wamid.P{run}{i}", f"text {run}{i}")
            assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
        sealer.seal_pending(services)

    def both() -> tuple[verifier.Report, verifier.Report]:
        with services.sessions() as session:
            key = services.signing_key.public_key()
            return (verifier.audit(services.store, key, session, workers=1),
                    verifier.audit(services.store, key, session, workers=2))

    alone, parallel = both()
    assert alone.ok and alone.segments >= 3 and parallel == alone
    with services.sessions.begin() as session:
        middle = session.scalars(select(Segment).order_by(Segment.first_seq)).all()[1]
        session.get(Record, middle.first_seq + 1).kind = "echo"
    alone, parallel = both()
    assert alone.first_error == f"seq {middle.first_seq + 1}: catalog row differs from the sealed record"
    assert parallel == alone
