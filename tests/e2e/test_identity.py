"""A contact is a person (decision 12): phone/wa_id and BSUID resolve to one identity.

A customer seen first by phone (history sync), then by BSUID (live): holds, the
conversation view and search find all of her records by either identifier; the pairing
is a sealed record; the table rebuilds from the chain; unrelated payloads merge nobody.
Real servers: SeaweedFS, SQLite and PostgreSQL catalogs, FTS5 and OpenSearch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from archiver import holds, identity, indexer, records
from archiver.catalog import ContactId, ContactLink, Cursor, Record, cursor_value
from archiver.cli import main as cli
from tests.conftest import all_fixture_bodies
from tests.e2e.test_holds import CATALOGS, Instance, _instance
from tests.e2e.test_pipeline import post, report, seal

pytestmark = [pytest.mark.s3]

PHONE, BSUID = "4479460001234", "GB.55501234567890123456"
BOB, CAROL, CAROL_ID = "33612345678", "4915112345678", "DE.99901234567890123456"
BUSINESS, BUSINESS_ID = "15550009999", "1099"
FEB, MAR = "1770000000", "1772600000"


def _envelope(field: str, value: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": BUSINESS, "phone_number_id": BUSINESS_ID}, **value}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": field, "value": value}]}]}).encode()


def history(*wamids: str) -> bytes:
    """A history chunk: her thread under her phone number only."""
    msgs = [{"from": PHONE, "id": w, "timestamp": FEB, "type": "text", "text": {"body": f"old times {w}"},
             "history_context": {"status": "READ"}} for w in wamids]
    return _envelope("history", {"history": [{"metadata": {"phase": 1, "chunk_order": 1, "progress": 100},
                                              "threads": [{"id": PHONE, "messages": msgs}]}]})


def live(wamid: str, text: str, *, paired: bool = True) -> bytes:
    """A live message: her BSUID, and (paired) her wa_id next to it in contacts[]."""
    contact: dict[str, Any] = {"profile": {"name": "Ines"}, "user_id": BSUID}
    msg: dict[str, Any] = {"id": wamid, "timestamp": MAR, "type": "text", "text": {"body": text}}
    if paired:
        contact["wa_id"], msg["from"] = PHONE, PHONE
    else:  # she adopted a username: no phone number at all
        msg["from_user_id"] = BSUID
    return _envelope("messages", {"contacts": [contact], "messages": [msg]})


def unrelated() -> list[bytes]:
    """Payloads naming several people or the business: none of them pairs two people."""
    # Bob writes, but contacts[] carries Carol's profile (not his): nothing pairs Bob with Carol.
    bob = _envelope("messages", {"contacts": [{"profile": {"name": "C"}, "wa_id": CAROL, "user_id": CAROL_ID}],
                                 "messages": [{"from": BOB, "id": "wamid.BOB1", "timestamp": MAR, "type": "text",
                                               "text": {"body": "hi from bob"}}]})
    # An echo from the business number to Bob: the business number is never a customer id.
    echo = _envelope("smb_message_echoes", {"message_echoes": [
        {"from": BUSINESS, "to": BOB, "id": "wamid.ECHO1", "timestamp": MAR, "type": "text", "text": {"body": "ok"}}]})
    # A status to Carol naming the business's phone-number id as her BSUID (garbage): not paired.
    status = _envelope("messages", {"statuses": [{"id": "wamid.X9", "status": "sent", "timestamp": MAR,
                                                  "recipient_id": CAROL, "recipient_user_id": BUSINESS_ID}]})
    return [bob, echo, status]


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    yield from _instance(request, tmp_path, monkeypatch, {})


def _seqs(inst: Instance, **where: Any) -> set[int]:
    with inst.services.sessions() as session:
        return set(session.scalars(select(Record.seq).filter_by(**where)))


def _links(inst: Instance) -> list[dict[str, Any]]:
    """The sealed identity_link records, decrypted from their segments."""
    out = []
    with inst.services.sessions() as session:
        for rec in session.scalars(select(Record).where(Record.kind == "audit", Record.type == "identity_link")):
            body = records.decrypt(inst.services, session, _stored(inst, session, rec.seq, rec.segment_id), {})
            assert body is not None
            out.append({"seq": rec.seq, **json.loads(body)})
    return out


def _stored(inst: Instance, session: Any, seq: int, segment_id: int) -> dict[str, Any]:
    from archiver.catalog import Segment

    seg = session.get(Segment, segment_id)
    return next(r for r in records.segment_records(inst.services, seg) if r["seq"] == seq)


def test_a_hold_by_either_identifier_holds_all_of_her_records(inst: Instance) -> None:
    old = inst.ingest(history("wamid.H1", "wamid.H2"))
    assert old == [] and len(_seqs(inst, kind="history_message", contact=PHONE)) == 2
    history_seqs = _seqs(inst, kind="history_message")
    matter = inst.matter()
    by_bsuid = inst.hold(matter, custodians=[BSUID])  # before the pairing: her BSUID names no record yet
    assert inst.counts(by_bsuid)["records"] == 0

    (first,) = inst.ingest(live("wamid.L1", "the quote"))  # the pairing: wa_id and user_id side by side
    (second,) = inst.ingest(live("wamid.L2", "signed", paired=False))  # BSUID only (a username)
    inst.ingest(*unrelated())
    assert inst.record(first).contact == BSUID and inst.record(second).contact == BSUID

    # The pairing is sealed evidence naming the record that proved it, once.
    (link,) = _links(inst)
    assert link["event"] == "identity_link" and link["ids"] == sorted([PHONE, BSUID])
    assert link["proof"] == first and link["proof_kind"] == "message" and link["seq"] > first
    with inst.services.sessions() as session:
        assert identity.resolve(session, PHONE) == identity.resolve(session, BSUID) == {PHONE, BSUID}
        assert identity.resolve(session, "+44 7946 0001234") == {PHONE, BSUID}
        assert identity.identity_of(session, BSUID) == min(PHONE, BSUID)
        # Nobody else merged: Bob, Carol and the business numbers stay alone.
        for other in (BOB, CAROL, CAROL_ID, BUSINESS, BUSINESS_ID):
            assert identity.resolve(session, other) == {other}, other
        assert set(identity.snapshot(session)["ids"]) == {PHONE, BSUID}

    # The hold made before the pairing is re-evaluated when it is learned: her history too.
    holds.sync(inst.services)
    mine = history_seqs | {first, second}
    deliveries = {inst.record(s).delivery_seq for s in mine}
    held_before = inst.held_seqs(by_bsuid)
    assert mine <= held_before and deliveries <= held_before
    by_phone = inst.hold(matter, custodians=[PHONE])  # after: by the phone number, the same records
    assert inst.held_seqs(by_phone) == held_before
    assert inst.counts(by_phone)["records"] == inst.counts(by_bsuid)["records"] == len(mine | deliveries)
    assert inst.counts(by_phone)["contacts"] == 2
    assert not _seqs(inst, contact=BOB) & held_before
    assert inst.held(first) and inst.held(min(history_seqs))
    assert report(inst.services).ok


@pytest.mark.parametrize("inst", [("sqlite", "fts5"), pytest.param(("sqlite", "opensearch"),
                                                                   marks=pytest.mark.opensearch)],
                         indirect=True, ids=["fts5", "opensearch"])
def test_her_conversation_and_contact_search_show_all_of_her_records(inst: Instance) -> None:
    inst.ingest(history("wamid.H1", "wamid.H2"))
    (first,) = inst.ingest(live("wamid.L1", "the quote"))
    (second,) = inst.ingest(live("wamid.L2", "signed", paired=False))
    inst.ingest(*unrelated())
    indexer.index_pending(inst.services)
    mine = _seqs(inst, kind="history_message") | {first, second}
    auditor = _token(inst, "auditor")
    for who in (PHONE, BSUID, "+" + PHONE):
        got = inst.client.get(f"/api/v1/conversations/{who}", headers=auditor)
        assert got.status_code == 200, got.get_json()
        assert {m["seq"] for m in got.get_json()["messages"]} == mine, who
        found = inst.client.get("/api/v1/search", query_string={"q": f'contact:"{who}"', "size": 50}, headers=auditor)
        assert {h["seq"] for h in found.get_json()["hits"]} == mine, who
    only_bob = inst.client.get(f"/api/v1/conversations/{BOB}", headers=auditor).get_json()["messages"]
    assert {m["seq"] for m in only_bob}.isdisjoint(mine) and only_bob
    narrowed = inst.client.get("/api/v1/search", query_string={"q": f"contact:{BSUID} times"}, headers=auditor)
    assert {h["seq"] for h in narrowed.get_json()["hits"]} == _seqs(inst, kind="history_message")


def test_the_table_rebuilds_from_the_sealed_links_and_contact_show_names_them(inst: Instance) -> None:
    inst.ingest(history("wamid.H1"))
    (first,) = inst.ingest(live("wamid.L1", "the quote"))
    inst.ingest(*unrelated())
    with inst.services.sessions() as session:
        before = identity.snapshot(session)
    assert identity.rebuild(inst.services) == 1
    with inst.services.sessions() as session:
        assert identity.snapshot(session) == before and before["ids"]

    # A catalog just migrated (the table empty, no cursor): the next sealer run replays the links.
    with inst.services.sessions.begin() as session:
        session.execute(delete(ContactId))
        session.execute(delete(ContactLink))
        session.execute(delete(Cursor).where(Cursor.name == identity.CURSOR))
    seal(inst.services)
    with inst.services.sessions() as session:
        assert identity.snapshot(session) == before

    runner = CliRunner()
    shown = runner.invoke(cli, ["contact", "show", PHONE, "--json"], env=inst.env)
    assert shown.exit_code == 0, shown.output
    out = json.loads(shown.stdout)
    assert out["identity"] == min(PHONE, BSUID) and out["identifiers"] == sorted([PHONE, BSUID])
    (link,) = out["links"]
    assert link["proof"] == first and link["ids"] == sorted([PHONE, BSUID])
    assert out["records"] == len(_seqs(inst, contact=PHONE) | _seqs(inst, contact=BSUID))
    text = runner.invoke(cli, ["contact", "show", BSUID], env=inst.env)
    assert text.exit_code == 0 and f"proved by #{first} (message)" in text.stdout
    missing = runner.invoke(cli, ["contact", "show", "4400000000000"], env=inst.env)
    assert missing.exit_code != 0 and "no-such-contact" in missing.output
    rebuilt = runner.invoke(cli, ["contact", "rebuild"], env=inst.env)
    assert rebuilt.exit_code == 0 and "1 identity link applied" in rebuilt.stdout
    assert report(inst.services).ok


def test_a_copy_of_a_message_archived_by_phone_still_pairs_her_ids(inst: Instance) -> None:
    inst.ingest(history("wamid.SAME"))
    (held,) = _seqs(inst, kind="history_message")
    assert inst.ingest(live("wamid.SAME", "old times wamid.SAME")) == []  # the live copy is a duplicate
    (link,) = _links(inst)
    proof = inst.record(link["proof"])
    assert proof.kind == "delivery" and proof.contact == BSUID and link["ids"] == sorted([PHONE, BSUID])
    with inst.services.sessions() as session:
        assert identity.resolve(session, BSUID) == {PHONE, BSUID}
    hold = inst.hold(inst.matter(), custodians=[BSUID])
    assert held in inst.held_seqs(hold)
    assert report(inst.services).ok


def test_every_fixture_is_accepted_and_pairs_only_its_own_customer(inst: Instance) -> None:
    for _, body in all_fixture_bodies():
        assert post(inst.client, body).status_code == 200
    seal(inst.services)
    with inst.services.sessions() as session:
        ids = identity.snapshot(session)["ids"]
        assert identity.resolve(session, "972987654321") >= {"972987654321", "US.13491208655302741918"}
        assert not {"972123456789", "1122334455667"} & set(ids)  # the fixtures' business numbers
    seal(inst.services)  # nothing learned twice
    links = _links(inst)
    assert len({tuple(link["ids"]) for link in links}) == len(links)
    assert report(inst.services).ok


def _token(inst: Instance, role: str) -> dict[str, str]:
    from archiver.auth import create_token

    with inst.services.sessions.begin() as session:
        secret = create_token(session, role, f"t-{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {secret}"}


def test_records_sealed_before_pairings_were_learned_are_read_again_on_upgrade(
        inst: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive sealed by a version that learned no pairings (before migration 0007): her
    history under her phone number, her live messages under her BSUID, the pairing only in a
    payload. The sealer runs after the upgrade re-read those records, window by window: the
    pairing is sealed (proof: her live message), and a custodian hold by her BSUID made before
    holds her phone-identified history; disposition waits for the re-read."""
    from archiver import disposition, sealer

    with monkeypatch.context() as old:  # the old sealer: no pairing learned, no re-read cursors
        old.setattr(identity, "learn", lambda session, pairings: 0)
        inst.ingest(history("wamid.H1", "wamid.H2"))
        (first,) = inst.ingest(live("wamid.L1", "the quote"))
        (second,) = inst.ingest(live("wamid.L2", "signed", paired=False))
        inst.ingest(*unrelated())
        by_bsuid = inst.hold(inst.matter(), custodians=[BSUID])
    with inst.services.sessions.begin() as session:  # as the old catalog was: no re-read began
        session.execute(delete(Cursor).where(Cursor.name.in_([identity.REREAD, identity.REREAD_THROUGH])))
    history_seqs = _seqs(inst, kind="history_message", contact=PHONE)
    assert len(history_seqs) == 2 and not _links(inst)
    with inst.services.sessions() as session:
        assert identity.resolve(session, BSUID) == {BSUID}
        head = session.scalar(select(Record.seq).order_by(Record.seq.desc()).limit(1))
    assert not inst.held_seqs(by_bsuid) & history_seqs  # her history is not known as hers yet
    assert second in inst.held_seqs(by_bsuid)
    assert disposition.evaluated_through(inst.services) == 0  # nothing re-read: disposition waits

    # The upgraded sealer re-reads what was sealed before it, a window per run.
    monkeypatch.setattr(identity, "REREAD_WINDOW", 3)
    sealer.seal_pending(inst.services)
    with inst.services.sessions() as session:
        through = cursor_value(session, identity.REREAD_THROUGH)
        assert through >= head and cursor_value(session, identity.REREAD) == 3
    assert disposition.evaluated_through(inst.services) == 3
    for _ in range(100):
        with inst.services.sessions() as session:
            if cursor_value(session, identity.REREAD) >= through:
                break
        sealer.seal_pending(inst.services)

    # The pairing is sealed evidence naming the record that proved it, once; nobody else merged.
    (link,) = _links(inst)
    assert link["ids"] == sorted([PHONE, BSUID]) and (link["proof"], link["proof_kind"]) == (first, "message")
    assert link["seq"] > head
    with inst.services.sessions() as session:
        assert identity.resolve(session, BSUID) == identity.resolve(session, PHONE) == {PHONE, BSUID}
        for other in (BOB, CAROL, CAROL_ID, BUSINESS, BUSINESS_ID):
            assert identity.resolve(session, other) == {other}, other
    with inst.services.sessions() as session:
        assert identity.read_through(session) is None  # every pairing known: disposition may go on

    holds.sync(inst.services)  # the hold made before is evaluated again on what it had passed
    assert disposition.evaluated_through(inst.services) >= link["seq"]
    mine = history_seqs | {first, second}
    deliveries = {inst.record(s).delivery_seq for s in mine}
    assert mine | deliveries <= inst.held_seqs(by_bsuid)
    assert inst.held(min(history_seqs)) and inst.held(second)
    assert not _seqs(inst, contact=BOB) & inst.held_seqs(by_bsuid)
    by_phone = inst.hold(inst.matter(), custodians=[PHONE])
    assert inst.held_seqs(by_phone) == inst.held_seqs(by_bsuid)

    sealer.seal_pending(inst.services)  # nothing learned twice
    assert len(_links(inst)) == 1
    assert report(inst.services).ok


def test_a_re_read_that_fails_never_stops_sealing_and_is_retried(inst: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    from archiver import disposition, sealer
    from archiver.errors import StoreError

    with monkeypatch.context() as old:  # sealed by a version that learned no pairings
        old.setattr(identity, "learn", lambda session, pairings: 0)
        inst.ingest(history("wamid.H1"), live("wamid.L1", "the quote"))
    with inst.services.sessions.begin() as session:
        session.execute(delete(Cursor).where(Cursor.name.in_([identity.REREAD, identity.REREAD_THROUGH])))

    def down(*args: Any) -> Any:
        raise StoreError("store unreachable")
    with monkeypatch.context() as failing:
        failing.setattr(identity, "_pairings", down)
        (later,) = inst.ingest(live("wamid.L2", "signed", paired=False))
        assert inst.record(later).contact == BSUID  # sealed all the same
        with inst.services.sessions() as session:
            assert cursor_value(session, identity.REREAD) == 0 and identity.read_through(session) == 0
        assert disposition.evaluated_through(inst.services) == 0  # disposition waits for the re-read
    sealer.seal_pending(inst.services)  # retried: the pairing is learned
    (link,) = _links(inst)
    assert link["ids"] == sorted([PHONE, BSUID])
    assert report(inst.services).ok
