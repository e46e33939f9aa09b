"""Media: webhook -> seal -> fetch from a (fake, real-HTTP) Graph API -> WORM -> media record."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import journal, keys, media, records
from archiver.app import create_app
from archiver.catalog import DataKey, Media, Record, utcnow
from archiver.cli import main as cli
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env
from tests.e2e.test_pipeline import counts, post, report, seal
from tests.fakegraph import FakeGraph, fake_graph  # noqa: F401  (the fixture)

PHOTO = b"\xff\xd8\xff\xe0 meter reading 004211 kWh" * 50
PDF = b"%PDF-1.7 Quote-7731 signed" * 80


class Instance:
    """One archiver instance (its own home) wired to a Graph URL."""

    def __init__(self, home: Path, **env: str) -> None:
        self.env = make_env(home, **env)
        self.services = Services.open(Settings.from_env(self.env))
        self.client = create_app(services=self.services).test_client()

    def fetch(self, now: datetime | None = None) -> int:
        return media.fetch_due(self.services, now=now)

    def rows(self) -> list[Media]:
        with self.services.sessions() as session:
            return list(session.scalars(select(Media).order_by(Media.id)))

    def records(self, kind: str) -> list[Record]:
        with self.services.sessions() as session:
            return list(session.scalars(select(Record).where(Record.kind == kind).order_by(Record.seq)))


@pytest.fixture
def inst(tmp_path: Path, fake_graph: FakeGraph) -> Iterator[Instance]:  # noqa: F811
    instance = Instance(tmp_path / "home", ARCHIVER_GRAPH_URL=fake_graph.url)
    yield instance
    instance.services.close()


def envelope(field: str, value: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"}, **value}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": field, "value": value}]}]}).encode()


def image_body(wamid: str, media_id: str, sha256: str) -> bytes:
    """A live inbound image, its digest in base64 as live webhooks send it."""
    msg = {"from": "4479460001234", "id": wamid, "timestamp": "1780001060", "type": "image",
           "image": {"caption": "Meter reading", "mime_type": "image/jpeg", "sha256": sha256, "id": media_id}}
    return envelope("messages", {"contacts": [{"profile": {"name": "Ines"}, "wa_id": "4479460001234"}],
                                 "messages": [msg]})


def history_document_body(wamid: str, media_id: str, sha256_hex: str) -> bytes:
    """The history media follow-up: top-level value.messages[] under field history, hex digest."""
    msg = {"from": "4479460001234", "id": wamid, "timestamp": "1779400400", "type": "document",
           "document": {"filename": "Quote-7731.pdf", "mime_type": "application/pdf",
                        "sha256": sha256_hex, "id": media_id}}
    return envelope("history", {"messages": [msg]})


def ingest(inst: Instance, body: bytes) -> None:
    assert post(inst.client, body).status_code == 200
    seal(inst.services)


def plaintext_of(inst: Instance, row: Media) -> bytes:
    services = inst.services
    assert row.object_key is not None
    with services.sessions() as session:
        wrapped = session.get(DataKey, row.key_id).wrapped
    data_key = services.kek.unwrap(wrapped, row.key_id)
    blob = services.store.get(row.object_key)
    return keys.open_payload(data_key, blob, row.object_key.encode(), row.object_key)[1]


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def test_live_image_is_fetched_stored_linked_and_verifiable(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    b64 = fake_graph.add("1487220933510642", PHOTO)
    assert len(b64) == 44 and b64.endswith("=")
    ingest(inst, image_body("wamid.IMG1", "1487220933510642", b64))
    # The message is sealed at once; its media only waits in the queue.
    c = counts(inst.services)
    assert c["items"]["message"] == 1 and c["media"] == {"stored": 0, "pending": 1, "failed": 0}
    (message,) = inst.records("message")

    assert inst.fetch() == 1
    (row,) = inst.rows()
    assert row.state == "stored" and row.size == len(PHOTO) and row.sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert row.attempts == 0 and row.last_error is None
    assert fake_graph.hits == {"meta": 1, "download": 1}
    assert plaintext_of(inst, row) == PHOTO
    seal(inst.services)

    (rec,) = inst.records("media")
    assert rec.links == {"message": message.seq} and rec.type == "image/jpeg"
    with inst.services.sessions() as session:
        notice = records.read_record(inst.services, session, rec.seq)["content"]
    assert notice["object_key"] == row.object_key and notice["record_seq"] == message.seq
    assert notice["object_sha256"] == hashlib.sha256(inst.services.store.get(row.object_key)).hexdigest()
    assert notice["sha256"] == row.sha256 and notice["media_id"] == "1487220933510642"
    assert inst.services.store.head(row.object_key).retain_until == message.retain_until

    out = CliRunner().invoke(cli, ["stats", "--json"], env=inst.env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["media"] == {"stored": 1, "pending": 0, "failed": 0}
    r = report(inst.services)
    assert r.ok, r.first_error
    assert inst.fetch(later(3600)) == 0  # nothing left to do: no more requests
    assert fake_graph.hits == {"meta": 1, "download": 1}


def test_history_follow_up_document_with_hex_digest(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    fake_graph.add("2210958776041133", PDF, "application/pdf")
    ingest(inst, history_document_body("wamid.H3", "2210958776041133", hashlib.sha256(PDF).hexdigest()))
    (item,) = inst.records("history_message")
    assert inst.fetch() == 1
    seal(inst.services)
    (row,) = inst.rows()
    assert row.state == "stored" and plaintext_of(inst, row) == PDF
    (rec,) = inst.records("media")
    assert rec.links == {"message": item.seq} and rec.type == "application/pdf"
    assert report(inst.services).ok


def test_transient_500s_back_off_then_succeed(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    b64 = fake_graph.add("901", PHOTO)
    fake_graph.fail("901", 1)
    fake_graph.fail("901", 1, download=True)
    ingest(inst, image_body("wamid.T1", "901", b64))
    t0 = utcnow()

    assert inst.fetch(t0) == 0
    (row,) = inst.rows()
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "http-500")
    assert row.next_attempt_at == t0 + timedelta(seconds=30)
    assert inst.fetch(t0 + timedelta(seconds=29)) == 0  # not due yet: no request at all
    assert fake_graph.hits == {"meta": 1}

    assert inst.fetch(t0 + timedelta(seconds=30)) == 0  # now the download fails once
    (row,) = inst.rows()
    assert (row.attempts, row.last_error) == (2, "http-500")
    assert row.next_attempt_at == t0 + timedelta(seconds=30 + 60)

    assert inst.fetch(t0 + timedelta(seconds=90)) == 1
    (row,) = inst.rows()
    assert row.state == "stored" and row.attempts == 2 and row.last_error is None
    seal(inst.services)
    assert counts(inst.services)["media"] == {"stored": 1, "pending": 0, "failed": 0}
    assert report(inst.services).ok


def test_hash_mismatch_retries_then_fails(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    tampered = fake_graph.add("701", PHOTO)
    fake_graph.corrupt("701")  # the download no longer matches either digest
    fake_graph.add("702", PDF)
    wrong_in_webhook = fake_graph.add("703", b"something else")  # the endpoint's digest is 702's bytes' own
    ingest(inst, image_body("wamid.M1", "701", tampered))
    ingest(inst, image_body("wamid.M2", "702", wrong_in_webhook))

    limit = inst.services.settings.media_max_attempts
    now = utcnow()
    for _ in range(limit):
        assert inst.fetch(now) == 0
        now += timedelta(hours=1)  # past any back-off
    rows = inst.rows()
    assert [(r.state, r.attempts, r.last_error) for r in rows] == [("failed", limit, "sha256-mismatch")] * 2
    assert list(inst.services.store.list("media/")) == []  # nothing unverified reaches WORM
    assert inst.fetch(now) == 0 and fake_graph.hits["meta"] == 2 * limit
    seal(inst.services)
    c = counts(inst.services)
    assert c["items"]["message"] == 2 and c["media"] == {"stored": 0, "pending": 0, "failed": 2}
    assert report(inst.services).ok


def test_graph_unreachable_keeps_rows_pending(tmp_path: Path, fake_graph: FakeGraph) -> None:  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once we leave: connection refused
    down = Instance(tmp_path / "home", ARCHIVER_GRAPH_URL=dead)
    for i, media_id in enumerate(("801", "802")):
        ingest(down, image_body(f"wamid.U{i}", media_id, fake_graph.add(media_id, PHOTO + bytes([i]))))
    t0 = utcnow()
    assert down.fetch(t0) == 0
    first, second = down.rows()
    # The pass stops at the first sign of an outage, and an outage spends no attempt.
    assert (first.state, first.attempts, first.last_error) == ("pending", 0, "unreachable")
    assert (second.state, second.attempts, second.last_error) == ("pending", 0, None)
    # The whole queue waits, untried; the probe waits longest, so the next probe is another row.
    assert second.next_attempt_at == t0 + media.OUTAGE_DELAY
    assert first.next_attempt_at == t0 + 2 * media.OUTAGE_DELAY
    for _ in range(20):
        down.fetch(t0 + timedelta(days=1))
    assert {r.state for r in down.rows()} == {"pending"}
    assert counts(down.services)["media"] == {"stored": 0, "pending": 2, "failed": 0}
    down.services.close()

    up = Instance(tmp_path / "home", ARCHIVER_GRAPH_URL=fake_graph.url)  # Graph is back
    assert up.fetch(t0 + timedelta(days=1, minutes=3)) == 2
    assert [r.state for r in up.rows()] == ["stored", "stored"]
    up.services.close()


def test_expired_id_404_fails_at_once_fresh_404_retries(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    ingest(inst, image_body("wamid.X1", "555000", "q1Vd7b0m9e4oY3vTq8mX0pC7yJk2aR5sW6uZ1nE4fHg="))
    assert inst.fetch() == 0
    (row,) = inst.rows()
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "http-404")
    assert inst.fetch(later(8 * 86400)) == 0  # the id is past its 7 days: a 404 is final
    (row,) = inst.rows()
    assert (row.state, row.attempts, row.last_error) == ("failed", 2, "http-404")


def test_crash_between_put_and_commit_reuses_the_stored_object(
        inst: Instance, fake_graph: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ingest(inst, image_body("wamid.C1", "601", fake_graph.add("601", PHOTO)))

    def crash(*_: Any) -> int:
        raise RuntimeError("killed after the put, before the commit")

    monkeypatch.setattr(journal, "append_media", crash)
    with pytest.raises(RuntimeError):
        inst.fetch()
    monkeypatch.undo()
    (key,) = inst.services.store.list("media/")
    first_blob = inst.services.store.get(key)
    assert inst.rows()[0].state == "pending"

    # The retry encrypts afresh (new nonce and salt), meets its key taken, and adopts the object.
    assert inst.fetch() == 1
    (row,) = inst.rows()
    assert row.object_key == key and list(inst.services.store.list("media/")) == [key]
    assert inst.services.store.get(key) == first_blob and plaintext_of(inst, row) == PHOTO
    seal(inst.services)
    (rec,) = inst.records("media")
    with inst.services.sessions() as session:
        notice = records.read_record(inst.services, session, rec.seq)["content"]
    assert notice["object_sha256"] == hashlib.sha256(first_blob).hexdigest()
    assert report(inst.services).ok


def test_an_edit_naming_the_same_media_shares_one_object(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    b64 = fake_graph.add("1487220933510642", PHOTO)
    ingest(inst, image_body("wamid.E0", "1487220933510642", b64))
    edit = {"from": "4479460001234", "id": "wamid.E1", "timestamp": "1780002000", "type": "edit",
            "edit": {"original_message_id": "wamid.E0", "message": {"type": "image", "image": {
                "caption": "Meter reading (corrected)", "mime_type": "image/jpeg", "sha256": b64,
                "id": "1487220933510642"}}}}
    ingest(inst, envelope("messages", {"messages": [edit]}))
    assert inst.fetch() == 2
    first, second = inst.rows()
    assert first.object_key == second.object_key and len(list(inst.services.store.list("media/"))) == 1
    seal(inst.services)
    assert sorted(r.links["message"] for r in inst.records("media")) == sorted([first.record_seq, second.record_seq])
    assert report(inst.services).ok


def test_shredded_key_is_never_refilled(inst: Instance, fake_graph: FakeGraph) -> None:  # noqa: F811
    ingest(inst, image_body("wamid.K1", "602", fake_graph.add("602", PHOTO)))
    with inst.services.sessions.begin() as session:
        session.get(DataKey, inst.rows()[0].key_id).wrapped = None
    assert inst.fetch() == 0
    (row,) = inst.rows()
    assert (row.state, row.last_error) == ("failed", "key-destroyed")
    assert fake_graph.hits == {}


def test_tokens_and_urls_never_reach_the_logs(
        tmp_path: Path, fake_graph: FakeGraph, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    secret = "EAAGm0PX4ZCpsBA-very-secret-graph-token"
    inst = Instance(tmp_path / "home", ARCHIVER_GRAPH_URL=fake_graph.url, ARCHIVER_GRAPH_TOKEN=secret)
    ingest(inst, image_body("wamid.L1", "401", fake_graph.add("401", PHOTO)))
    ingest(inst, image_body("wamid.L2", "402", fake_graph.add("402", PDF)))
    fake_graph.corrupt("402")

    t0 = utcnow()
    assert inst.fetch(t0) == 0  # the fake expects another token: refused, pass stopped
    assert [(r.state, r.attempts, r.last_error) for r in inst.rows()] == [("pending", 0, "http-401"), ("pending", 0, None)]
    fake_graph.token = secret
    assert inst.fetch(t0 + timedelta(minutes=5)) == 1  # 401 stored, 402 mismatched
    assert [r.last_error for r in inst.rows()] == [None, "sha256-mismatch"]
    inst.services.close()

    # No token configured: nothing is attempted, the rows just wait.
    bare = Instance(tmp_path / "home", ARCHIVER_GRAPH_URL=fake_graph.url, ARCHIVER_GRAPH_TOKEN="")
    hits = sum(fake_graph.hits.values())
    assert bare.fetch(t0 + timedelta(hours=2)) == 0 and sum(fake_graph.hits.values()) == hits
    assert bare.rows()[1].state == "pending"
    bare.services.close()

    events = {r.getMessage().split(" ")[0] for r in caplog.records if r.name == "archiver.media"}
    assert {"media.graph_down", "media.retry", "media.stored", "media.skipped"} <= events
    for r in caplog.records:
        text = r.getMessage() + (r.exc_text or "")
        assert secret not in text, r.name
        if r.levelno >= logging.INFO or r.name.startswith("archiver"):
            # urllib3 logs request paths at DEBUG; everything at INFO and up, and all of ours, is clean.
            assert fake_graph.url not in text and "/download/" not in text and "hash=AR" not in text, r.name
