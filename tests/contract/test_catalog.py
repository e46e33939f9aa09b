"""One catalog suite, run on SQLite and on a real PostgreSQL (started by scripts/test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select, text

from archiver import auth, catalog, sealer, stats
from archiver import verify as verifier
from archiver.app import create_app
from archiver.catalog import Media, Record
from archiver.config import Settings
from archiver.services import Services
from tests import backends
from tests.conftest import all_fixture_bodies, make_env, sign


def _pg_schema_url() -> Iterator[str]:
    base = backends.pg_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = sqlalchemy.create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def svc(catalog_url: str, tmp_path: Path) -> Iterator[Services]:
    services = Services.open(Settings.from_env(make_env(tmp_path / "home", ARCHIVER_CATALOG_URL=catalog_url)))
    yield services
    services.close()


def test_pipeline_seals_every_fixture_and_verifies(svc: Services) -> None:
    client = create_app(services=svc).test_client()
    bodies = all_fixture_bodies()
    for _, body in bodies:
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(svc)
    for _, body in bodies[:5]:  # redeliveries
        client.post("/webhooks/whatsapp", data=body, headers=sign(body))
    sealer.seal_pending(svc)
    with svc.sessions() as session:
        counts = stats.collect(session)
        report = verifier.audit(svc.store, svc.signing_key.public_key(), session)
    assert counts["deliveries"] == len(bodies) + 5 and counts["pending"] == 0
    assert counts["duplicates"] >= 5 and counts["quarantined"] == 0
    assert report.ok, report.first_error


def test_leader_lock_is_exclusive(svc: Services) -> None:
    with catalog.leader_lock(svc.engine) as first:
        with catalog.leader_lock(svc.engine) as second:
            assert first is True and second is False
    with catalog.leader_lock(svc.engine) as again:
        assert again is True


def test_item_keys_are_unique_in_the_database(svc: Services) -> None:
    client = create_app(services=svc).test_client()
    body = all_fixture_bodies()[0][1]
    client.post("/webhooks/whatsapp", data=body, headers=sign(body))
    sealer.seal_pending(svc)
    with svc.sessions() as session:
        row = session.scalars(select(Record).where(Record.item_key.is_not(None))).first()
        assert row is not None
        clone = Record(**{c.key: getattr(row, c.key) for c in Record.__table__.columns})
        clone.seq = row.seq + 1000
        session.add(clone)
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            session.flush()


def test_tokens_are_hashed_and_revocable(svc: Services) -> None:
    with svc.sessions.begin() as session:
        secret = auth.create_token(session, "auditor", "ana")
    with svc.sessions() as session:
        stored = [row[0] for row in session.execute(text("SELECT token_hash FROM tokens"))]
        assert secret not in stored and auth.lookup(session, secret) is not None
    with svc.sessions.begin() as session:
        assert auth.revoke_token(session, "ana") == 1
    with svc.sessions() as session:
        assert auth.lookup(session, secret) is None


def test_datetimes_round_trip_as_aware_utc(svc: Services) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with svc.sessions.begin() as session:
        session.add(Media(record_seq=1, media_id="m", key_id="k", next_attempt_at=when))
    with svc.sessions() as session:
        got = session.scalars(select(Media)).one().next_attempt_at
    assert got == when and got.tzinfo is not None


def test_insert_rows_matches_the_orm_on_every_type(svc: Services) -> None:
    """The hand-built multi-row INSERT stores what SQLAlchemy would (datetimes, JSON, nulls)."""
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    rows = [dict(seq=i, kind="message", type=None if i % 2 else "text", item_key=f"k{i}", wamid=f"w{i}",
                 contact="33612345678", delivery_seq=i - 1 or None, segment_id=1, hash="ab" * 32,
                 retention_class="default", retain_until=when, key_id="default/2031-05/x", occurred_at=i * 1000,
                 links={"reply_to": i - 1} if i > 1 else {})
            for i in range(1, 1204)]  # more than two chunks, the last one partial
    with svc.sessions.begin() as session:
        session.add(catalog.Segment(id=1, key="segments/default/x", retention_class="default", first_seq=1,
                                    last_seq=1203, records=1203, merkle_root="00", last_hash="00", sha256="00",
                                    size=1, retain_until=when, checkpoint_key="checkpoints/x",
                                    checkpoint_digest="00"))
        session.flush()
        catalog.insert_rows(session.connection(), Record.__table__, rows)
    with svc.sessions() as session:
        got = {r.seq: r for r in session.scalars(select(Record))}
    assert len(got) == len(rows)
    for row in rows:
        rec = got[row["seq"]]
        assert {k: getattr(rec, k) for k in row} == row


def test_mark_sealed_sets_each_rows_delivery_seq_and_drops_bodies(svc: Services) -> None:
    from archiver.catalog import Journal
    from archiver.journal import append_delivery, mark_sealed

    with svc.sessions.begin() as session:
        ids = [append_delivery(session, "webhook", f"body {i}".encode(), {}) for i in range(900)]
    sealed = {jid: 10_000 + 3 * n for n, jid in enumerate(ids[:850])}  # the last 50 stay pending
    with svc.sessions.begin() as session:
        mark_sealed(session.connection(), sealed)
    with svc.sessions() as session:
        rows = {j.id: j for j in session.scalars(select(Journal))}
    for jid in ids:
        row = rows[jid]
        if jid in sealed:
            assert (row.sealed, row.delivery_seq, row.body) == (True, sealed[jid], None)
        else:
            assert (row.sealed, row.delivery_seq) == (False, None) and row.body


def test_reading_the_chain_tip_of_a_fresh_archive_never_writes(svc: Services) -> None:
    """The indexer and the sealer's planner read the tip in reading sessions; on a fresh
    catalog that must not turn them into writers (SQLite: 'database is locked')."""
    with svc.sessions.begin() as writer:  # another writer holds the lock meanwhile
        writer.execute(text("SELECT 1"))
        with svc.sessions() as session:
            head = catalog.chain_head(session)
            assert (head.seq, head.hash) == (0, "00" * 32)
            assert session.execute(text("SELECT count(*) FROM chain_head")).scalar() == 0
    with svc.sessions.begin() as session:
        catalog.chain_head(session)
    with svc.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM chain_head")).scalar() == 1
